"""The baseline of `e2e_throughput.py`: FastAPI + Celery + Redis doing the same no-op jobs.

One module holds both halves, as a small FastAPI + Celery service usually does:

- `app`: FastAPI, run by uvicorn with the gateway's flags. `POST /jobs/batch` (`{"jobs":
  [...]}`) and `POST /jobs` (one job) parse the same JSON bodies the gateway takes and send
  one Celery task per job with `apply_async` (one pooled producer per request), then answer
  202 with the task ids, as the gateway answers with job ids.
- `celery`: the Celery app, run by `celery -A bench.celery_app:celery worker`. Its task
  `bench.noop` does nothing but `INCR` a Redis counter, which is how the benchmark sees jobs
  complete (the counterpart of counting `succeeded` rows in jobgate's job table).

Environment (set by the benchmark; each variant gets its own queue and counter):

- `BENCH_CELERY_BROKER`: Redis URL, default `redis://127.0.0.1:6379/15` (a dedicated DB the
  benchmark flushes first);
- `BENCH_CELERY_QUEUE`: the Celery queue (and counter key prefix), default `bench-noop`;
- `BENCH_CELERY_DURABLE=1`: Celery configured closer to jobgate's guarantees: `acks_late`
  (a task is acknowledged after it ran, not when it is received) and a Redis result backend
  (each task's state is stored and can be queried by id, as a job's status can). Unset:
  Celery's defaults (early ack, no result stored).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import redis
from celery import Celery  # type: ignore[import-untyped]
from fastapi import FastAPI, status
from pydantic import BaseModel, ConfigDict, Field

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-noop")
DURABLE = os.environ.get("BENCH_CELERY_DURABLE", "") == "1"
DONE_KEY = f"{QUEUE}:done"

celery = Celery("bench", broker=BROKER_URL)
celery.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_acks_late=DURABLE,
    task_ignore_result=not DURABLE,
    result_backend=BROKER_URL if DURABLE else None,
)


@lru_cache(maxsize=1)
def counter() -> redis.Redis:
    # One client (and connection pool) per worker process, shared by its threads.
    return redis.Redis.from_url(BROKER_URL)


@celery.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(job: dict[str, Any]) -> None:
    del job  # the task succeeds without looking at it
    counter().incr(DONE_KEY)


class JobIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str


class JobBatchIn(BaseModel):
    jobs: list[JobIn] = Field(min_length=1, max_length=100)


class Accepted(BaseModel):
    id: str
    type: str
    status: str


class BatchAccepted(BaseModel):
    jobs: list[Accepted]


app = FastAPI(title="bench-celery")


def _send(jobs: list[JobIn]) -> list[Accepted]:
    with celery.producer_or_acquire() as producer:
        return [
            Accepted(
                id=noop.apply_async((job.model_dump(),), producer=producer).id,
                type=job.type,
                status="queued",
            )
            for job in jobs
        ]


# Plain `def` routes: Celery's publish blocks on Redis, so FastAPI runs them in its threadpool.
@app.post("/jobs/batch", status_code=status.HTTP_202_ACCEPTED, response_model=BatchAccepted)
def submit_batch(batch: JobBatchIn) -> BatchAccepted:
    return BatchAccepted(jobs=_send(batch.jobs))


@app.post("/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
def submit_job(job: JobIn) -> Accepted:
    return _send([job])[0]


@app.get("/healthz")
async def liveness() -> dict[str, str]:
    # Readiness probe for the benchmark runner only.
    return {"status": "ok"}
