"""The baseline of `accept_throughput.py`: FastAPI doing no work behind `POST /v1/jobs`
(and `POST /v1/jobs/batch`, the batch benchmark's baseline in `suite.py`).

It parses the same JSON body into a pydantic model and answers 202 with a small JSON body
the way the gateway does, so the ratio isolates what jobgate adds: authentication,
validation of the job payload, the job, event and queue-message writes and the commit.
"""

from __future__ import annotations

from uuid import uuid4

from fastapi import FastAPI, status
from pydantic import BaseModel, ConfigDict, Field


class JobIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str


class Accepted(BaseModel):
    id: str
    type: str
    status: str


class JobBatchIn(BaseModel):
    jobs: list[JobIn] = Field(min_length=1, max_length=100)


class BatchAccepted(BaseModel):
    jobs: list[Accepted]


app = FastAPI(title="bare")


@app.post("/v1/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def submit_job(job: JobIn) -> Accepted:
    return Accepted(id=uuid4().hex, type=job.type, status="queued")


# The baseline of the batch benchmark in bench/suite.py: the same body, one id per job.
@app.post("/v1/jobs/batch", status_code=status.HTTP_202_ACCEPTED, response_model=BatchAccepted)
async def submit_batch(batch: JobBatchIn) -> BatchAccepted:
    return BatchAccepted(
        jobs=[Accepted(id=uuid4().hex, type=job.type, status="queued") for job in batch.jobs]
    )


@app.get("/healthz")
async def liveness() -> dict[str, str]:
    # Readiness probe for the benchmark runner only; never loaded.
    return {"status": "ok"}
