"""Admission control under 10x overload: refusals stay cheap and every 202 is stored.

Runs a real `jobgate serve` and a real `jobgate consume --queue analytics-events` on a fresh
SQLite file (or a fresh PostgreSQL schema when JOBGATE_DATABASE_URL points at PostgreSQL).

1. Calibrate: prefill the queue, then measure how fast the consumer drains it: that is the
   sustainable load D (jobs/s).
2. Overload: several tenants submit batches of `analytics-event` jobs as fast as `--workers`
   concurrent clients can, aiming at `--factor` x D jobs/s, for `--duration` seconds. Tenants
   have a rate limit (a share of D) and the queue has watermarks, so both limits bite.
3. Report: offered vs accepted jobs/s, answers by status and problem type, p50/p99 latency of
   acceptances and of refusals, gateway RSS before/after, and whether every accepted job id is
   in the job store (and no refused one is).

    .venv/bin/python bench/admission_overload.py [--duration 20] [--factor 10]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # for tests.support when run as a script

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from app.core.config import DatabaseSettings  # noqa: E402
from app.core.db import create_engine  # noqa: E402
from app.jobs.models import Job  # noqa: E402
from app.queues.models import QueueMessage  # noqa: E402
from tests.support.databases import fresh_pg_schema, postgres_url_from_env  # noqa: E402
from tests.support.servers import (  # noqa: E402
    create_tenant,
    db_upgrade,
    jobgate_argv,
    jobgate_env,
    jobgate_server,
)

QUEUE = "analytics-events"


def event(i: int) -> dict[str, Any]:
    return {"type": "analytics-event", "name": "bench.event", "properties": {"i": i}}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class Tally:
    accepted_ids: list[str] = field(default_factory=list)
    refused_requests: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    accept_ms: list[float] = field(default_factory=list)
    refuse_ms: list[float] = field(default_factory=list)
    retry_after: dict[str, list[int]] = field(default_factory=dict)
    jobs_offered: int = 0


class Store:
    """Direct reads of the job store (the bench's ground truth)."""

    def __init__(self, url: str, schema: str | None) -> None:
        self.engine = create_engine(DatabaseSettings(url=url), search_path=schema)

    async def backlog(self) -> int:
        async with self.engine.connect() as conn:
            query = (
                select(func.count()).select_from(QueueMessage).where(QueueMessage.queue == QUEUE)
            )
            return int((await conn.execute(query)).scalar_one())

    async def job_ids(self) -> set[str]:
        async with self.engine.connect() as conn:
            return {str(row[0]) for row in (await conn.execute(select(Job.id))).all()}  # type: ignore[call-overload]

    async def close(self) -> None:
        await self.engine.dispose()


async def calibrate(http: httpx.AsyncClient, key: str, store: Store, jobs: int) -> float:
    """Prefill `jobs` events with the consumer running; return its drain rate (jobs/s)."""
    headers = {"Authorization": f"Bearer {key}"}
    for start in range(0, jobs, 100):
        batch = [event(i) for i in range(start, min(jobs, start + 100))]
        response = await http.post("/v1/jobs/batch", json={"jobs": batch}, headers=headers)
        response.raise_for_status()
    first_count, first_at = await store.backlog(), time.monotonic()
    count, now = first_count, first_at
    while count > first_count * 0.2 and now - first_at < 60:
        await asyncio.sleep(0.5)
        count, now = await store.backlog(), time.monotonic()
    rate = (first_count - count) / max(now - first_at, 1e-3)
    while await store.backlog() > 0 and time.monotonic() - first_at < 120:
        await asyncio.sleep(0.5)
    return rate


async def overload(
    base_url: str,
    keys: list[str],
    *,
    target_jobs_s: float,
    duration: float,
    batch: int,
    workers: int,
) -> tuple[Tally, float]:
    tally = Tally()
    interval = workers * batch / target_jobs_s  # per worker, to aim at the target rate
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)

    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as http:

        async def worker(n: int) -> None:
            key = keys[n % len(keys)]
            headers = {"Authorization": f"Bearer {key}"}
            i = 0
            next_at = time.monotonic()
            while time.monotonic() < deadline:
                jobs = [event(n * 1_000_000 + i + j) for j in range(batch)]
                i += batch
                tally.jobs_offered += batch
                started = time.perf_counter()
                response = await http.post("/v1/jobs/batch", json={"jobs": jobs}, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code == 202:
                    tally.accept_ms.append(elapsed)
                    tally.accepted_ids.extend(job["id"] for job in response.json()["jobs"])
                    tally.answers["202"] += 1
                else:
                    tally.refuse_ms.append(elapsed)
                    tally.refused_requests += 1
                    kind = response.json().get("type", "").rsplit("/", 1)[-1]
                    tally.answers[f"{response.status_code} {kind}"] += 1
                    if "retry-after" in response.headers:
                        waits = tally.retry_after.setdefault(kind, [])
                        waits.append(int(response.headers["retry-after"]))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(workers)))
        return tally, time.monotonic() - started


def gateway_env(url: str, schema: str | None, high: int) -> dict[str, str]:
    return jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
            "JOBGATE_RATE_LIMIT_JOBS": "100000000/minute",  # load tenants get plans
            "JOBGATE_ADMISSION_WATERMARKS": (
                f'{{"{QUEUE}": {{"high_messages": {high}, "low_messages": {high // 2}}}}}'
            ),
            "JOBGATE_ADMISSION_SAMPLE_INTERVAL_MS": "500",
            "JOBGATE_ADMISSION_DRAIN_WINDOW_MS": "10000",
        },
    )


def start_consumer(stack: ExitStack, env: dict[str, str]) -> None:
    logs = stack.enter_context(tempfile.TemporaryFile())
    consumer = subprocess.Popen(
        jobgate_argv("consume", "--queue", QUEUE),
        env=env,
        cwd=REPO_ROOT,
        stdout=logs,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.callback(lambda: (consumer.terminate(), consumer.wait(timeout=30)))


async def run(args: argparse.Namespace, url: str, schema: str | None) -> int:
    store = Store(url, schema)
    env = gateway_env(url, schema, high=1_000_000)
    await asyncio.to_thread(db_upgrade, env)
    calibration = await asyncio.to_thread(create_tenant, env, f"calibrate-{secrets.token_hex(3)}")
    tenants = [
        await asyncio.to_thread(create_tenant, env, f"load-{n}-{secrets.token_hex(3)}")
        for n in range(args.tenants)
    ]
    with ExitStack() as stack:
        gateway = stack.enter_context(jobgate_server("serve", env=env))
        start_consumer(stack, env)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30.0) as http:
            sustainable = await calibrate(http, calibration["api_key"], store, args.calibrate_jobs)

    # The high watermark: `--high-watermark`, else 5 s of drain at the sustainable rate.
    high = args.high_watermark or max(100, int(5 * sustainable))
    # Each tenant may submit twice its fair share of D: together they overload the consumer,
    # so the watermark must hold the line, and each tenant's own limit bites on its excess.
    per_tenant = max(1, int(2 * sustainable / args.tenants))
    await set_plans(url, schema, [t["tenant_id"] for t in tenants], f"{per_tenant}/second")
    env = gateway_env(url, schema, high=high)
    with ExitStack() as stack:
        gateway = stack.enter_context(jobgate_server("serve", env=env))
        start_consumer(stack, env)
        await asyncio.sleep(1.0)
        rss_before = rss_kib(gateway.pid)
        tally, elapsed = await overload(
            gateway.base_url,
            [t["api_key"] for t in tenants],
            target_jobs_s=args.factor * sustainable,
            duration=args.duration,
            batch=args.batch,
            workers=args.workers,
        )
        rss_after = rss_kib(gateway.pid)
        stored = await store.job_ids()
    await store.close()

    accepted = set(tally.accepted_ids)
    missing = accepted - stored
    offered = tally.jobs_offered / elapsed
    print(f"database: {'PostgreSQL' if schema else 'SQLite (synchronous=NORMAL)'}")
    print(f"sustainable (consumer drain, calibrated): {sustainable:8.1f} jobs/s")
    print(
        f"offered:  {offered:8.1f} jobs/s = {offered / sustainable:4.1f}x sustainable "
        f"(target {args.factor}x; {args.workers} clients, batches of {args.batch}, "
        f"{args.tenants} tenants at {per_tenant}/s each, high watermark {high})"
    )
    print(
        f"accepted: {len(accepted) / elapsed:8.1f} jobs/s ({len(accepted)} jobs in {elapsed:.1f} s)"
    )
    print("answers (requests):", dict(sorted(tally.answers.items())))
    print(
        f"latency ms: accepted p50 {pct(tally.accept_ms, 50):.1f} "
        f"p99 {pct(tally.accept_ms, 99):.1f} | refused p50 {pct(tally.refuse_ms, 50):.1f} "
        f"p99 {pct(tally.refuse_ms, 99):.1f}"
    )
    for kind, waits in sorted(tally.retry_after.items()):
        print(
            f"Retry-After s ({kind}): min {min(waits)} median "
            f"{statistics.median(waits):.0f} max {max(waits)}"
        )
    print(f"gateway RSS: before {rss_before / 1024:.1f} MiB, after {rss_after / 1024:.1f} MiB")
    print(
        f"stored: {len(accepted) - len(missing)}/{len(accepted)} accepted jobs are in the job "
        f"store; missing {len(missing)}"
    )
    return 1 if missing else 0


async def set_plans(url: str, schema: str | None, tenant_ids: list[str], limit: str) -> None:
    from app.admission.limiter import RouteClass
    from app.admission.plans import set_plan
    from app.core.clock import utcnow
    from app.core.db import create_sessionmaker

    engine = create_engine(DatabaseSettings(url=url), search_path=schema)
    try:
        async with create_sessionmaker(engine)() as session:
            for tenant_id in tenant_ids:
                await set_plan(
                    session,
                    tenant_id=tenant_id,
                    now=utcnow(),
                    plan="bench",
                    rate_limits={RouteClass.jobs: limit},
                )
            await session.commit()
    finally:
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of overload")
    parser.add_argument("--factor", type=float, default=10.0, help="x the sustainable load")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--workers", type=int, default=32, help="concurrent clients")
    parser.add_argument("--batch", type=int, default=10, help="jobs per request")
    parser.add_argument(
        "--high-watermark", type=int, default=0, help="0: 5 s of drain at the sustainable rate"
    )
    parser.add_argument("--calibrate-jobs", type=int, default=2000)
    args = parser.parse_args()

    raw = postgres_url_from_env()
    if raw is not None:
        with fresh_pg_schema(raw, "bench") as schema:
            return asyncio.run(run(args, raw, schema))
    with tempfile.TemporaryDirectory(prefix="jobgate-bench-") as tmp:
        return asyncio.run(run(args, f"sqlite:///{Path(tmp) / 'bench.db'}", None))


if __name__ == "__main__":
    raise SystemExit(main())
