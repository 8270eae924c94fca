"""End-to-end jobs/s with a no-op handler: jobgate vs FastAPI + Celery + Redis, same run.

A job counts when it is done: from the first submit to the moment all N jobs of the round
have run. jobgate: `jobgate serve` + `jobgate consume --queue analytics-events` on the local
engine, on a fresh SQLite file (and a fresh PostgreSQL schema when JOBGATE_DATABASE_URL
points at PostgreSQL); done = `job.status = 'succeeded'`. Celery: `bench/celery_app.py`
under uvicorn + a Celery worker on Redis DB 15; done = a Redis counter the task increments.
Both are polled with one query every 100 ms, loaded by the same client, alternating.

    .venv/bin/python bench/e2e_throughput.py [--jobs 2000] [--rounds 3] [--batch 100 1]

See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # for tests.support when run as a script

import httpx  # noqa: E402
import json5  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from app.core.config import DatabaseSettings  # noqa: E402
from app.core.db import async_url, create_engine  # noqa: E402
from app.jobs.models import Job, JobStatus  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.accept_throughput import UNLIMITED_ADMISSION, pg_schema, pg_url  # noqa: E402
from tests.support.servers import (  # noqa: E402
    ServerProcess,
    create_tenant,
    db_upgrade,
    jobgate_argv,
    jobgate_env,
    jobgate_server,
)

QUEUE = "analytics-events"
POLL_S = 0.1
STOP_TIMEOUT_S = 30.0
REDIS_URL = "redis://127.0.0.1:6379/15"  # dedicated to this benchmark: flushed first
# jobgate's consumer runs this many handlers at once per queue (no `max_concurrency` set).
JOBGATE_CONCURRENCY = Settings().consumer.default_concurrency
UVICORN_FLAGS = ["--host", "127.0.0.1", "--workers", "1", "--log-level", "warning"]


def event(i: int) -> dict[str, Any]:
    return {"type": "analytics-event", "name": "bench.event", "properties": {"i": i}}


@dataclass(frozen=True, slots=True)
class Round:
    jobs: int
    submit_s: float  # first submit → last 202
    first_done_s: float  # first submit → first poll that saw a job done
    done_s: float  # first submit → first poll that saw all jobs done
    errors: int  # requests not answered 202, or jobs not done before the timeout

    @property
    def rate(self) -> float:
        return self.jobs / self.done_s if self.done_s else 0.0


class Counter(Protocol):
    """Where a target's completed jobs are counted (its ground truth)."""

    async def done(self) -> int: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Target:
    label: str
    base_url: str
    single_path: str
    batch_path: str
    headers: dict[str, str]
    counter: Counter
    processes: list[Background]
    kind: str  # "jobgate" or "celery"
    results: dict[int, list[Round]] = field(default_factory=dict)
    server: ServerProcess | None = None  # the HTTP process (its pid: RSS and CPU in bench/suite.py)

    def path(self, batch: int) -> str:
        return self.single_path if batch == 1 else self.batch_path

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()


class Background:
    """A long-running subprocess (consumer, worker) with its output in a file."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log: IO[bytes]) -> None:
        self.argv = list(argv)
        self._log = log
        self._proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self._proc.poll() is not None:
            raise RuntimeError(
                f"`{' '.join(self.argv)}` exited with {self._proc.returncode}:\n{self.output()}"
            )

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=STOP_TIMEOUT_S)


def background(stack: ExitStack, argv: Sequence[str], env: dict[str, str]) -> Background:
    log = stack.enter_context(tempfile.TemporaryFile())
    process = Background(argv, env, log)
    stack.callback(process.stop)
    return process


def with_pythonpath(env: dict[str, str]) -> dict[str, str]:
    # The consumer imports `bench.noop_handlers`, uvicorn and Celery import `bench.celery_app`.
    parts = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(parts)}


# -- jobgate ---------------------------------------------------------------------------------


class JobStore:
    """`SELECT count(*) FROM job WHERE status = 'succeeded'`, one query per poll.

    On SQLite this is a plain WAL reader, not the app's engine: that one begins every
    transaction with BEGIN IMMEDIATE (the write lock), so polling through it would queue
    behind, and slow down, the gateway's and the consumer's commits it is measuring.
    """

    def __init__(self, url: str, schema: str | None) -> None:
        if make_url(url).get_backend_name() == "sqlite":
            self.engine = create_async_engine(async_url(url))
        else:
            self.engine = create_engine(DatabaseSettings(url=url), search_path=schema)
        self._query = (
            select(func.count()).select_from(Job).where(Job.status == JobStatus.succeeded)  # type: ignore[arg-type]
        )

    async def done(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(self._query)).scalar_one())

    async def statuses(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            query = select(Job.status, func.count()).group_by(Job.status)  # type: ignore[call-overload]
            return {str(s): int(n) for s, n in (await conn.execute(query)).all()}

    async def close(self) -> None:
        await self.engine.dispose()


def write_topology(path: Path) -> Path:
    """The shipped wrangler.jsonc with `analytics-events` consumed in batches of 100 that
    run as soon as they are pulled (max_batch_timeout 0), as a Celery worker takes tasks."""
    raw = json5.loads((REPO_ROOT / "wrangler.jsonc").read_text())
    consumers = [c for c in raw["queues"]["consumers"] if c["queue"] != QUEUE]
    consumers.append({"queue": QUEUE, "max_batch_size": 100, "max_batch_timeout": 0})
    raw["queues"]["consumers"] = consumers
    path.write_text(json.dumps(raw))
    return path


def start_jobgate(
    stack: ExitStack,
    label: str,
    url: str,
    schema: str | None,
    sync: str,
    topology: Path,
    api_key: str | None = None,
) -> Target:
    """`jobgate serve` + `jobgate consume`; with `api_key`, the database is already migrated
    and has that tenant (bench/suite.py prepares its databases up front)."""
    env = with_pythonpath(
        jobgate_env(
            url,
            schema=schema,
            extra={
                "JOBGATE_SQLITE_SYNCHRONOUS": sync,
                "JOBGATE_WRANGLER_CONFIG": str(topology),
                "JOBGATE_HANDLER_MODULES": "bench.noop_handlers",
                # Measure the job path, not the per-tenant rate limits.
                "JOBGATE_RATE_LIMIT_JOBS": "100000000/minute",
                "JOBGATE_ADMISSION_RATE_LIMIT_BATCH": "100000000/minute",
                **UNLIMITED_ADMISSION,
            },
        )
    )
    if api_key is None:
        db_upgrade(env)
        api_key = create_tenant(env, "bench")["api_key"]
    key = api_key
    gateway = stack.enter_context(jobgate_server("serve", env=env))
    consumer = background(stack, jobgate_argv("consume", "--queue", QUEUE), env)
    store = JobStore(url, schema)
    return Target(
        label=label,
        base_url=gateway.base_url,
        single_path="/v1/jobs",
        batch_path="/v1/jobs/batch",
        headers={"Authorization": f"Bearer {key}"},
        counter=store,
        processes=[consumer],
        kind="jobgate",
        server=gateway,
    )


# -- Celery ----------------------------------------------------------------------------------


class RedisCounter:
    """`GET <queue>:done`, the counter `bench.noop` increments, one query per poll."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.client = aioredis.Redis.from_url(REDIS_URL)

    async def done(self) -> int:
        return int(await self.client.get(self.key) or 0)

    async def close(self) -> None:
        await self.client.aclose()


def start_celery(stack: ExitStack, durable: bool, pool: str, concurrency: int) -> Target:
    queue = "bench-durable" if durable else "bench-default"
    env = with_pythonpath(
        {
            **os.environ,
            "BENCH_CELERY_BROKER": REDIS_URL,
            "BENCH_CELERY_QUEUE": queue,
            "BENCH_CELERY_DURABLE": "1" if durable else "",
        }
    )
    argv = [sys.executable, "-m", "uvicorn", "bench.celery_app:app", *UVICORN_FLAGS]
    api = stack.enter_context(
        ServerProcess(lambda port: [*argv, "--no-access-log", "--port", str(port)], env=env)
    )
    worker_argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.celery_app:celery",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--queues",
        queue,
        "--hostname",
        f"{queue}@%h",
        "--loglevel",
        "WARNING",
        # Cluster chatter a single worker does not need (Celery's usual tuning advice).
        "--without-gossip",
        "--without-mingle",
    ]
    worker = background(stack, worker_argv, env)
    label = "celery acks_late+results" if durable else "celery (defaults)"
    return Target(
        label=label,
        base_url=api.base_url,
        single_path="/jobs",
        batch_path="/jobs/batch",
        headers={},
        counter=RedisCounter(f"{queue}:done"),
        processes=[worker],
        kind="celery",
        server=api,
    )


async def flush_redis() -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


# -- measuring -------------------------------------------------------------------------------


def requests_for(jobs: int, batch: int, first: int) -> Iterator[Any]:
    """Request bodies: single jobs, or `{"jobs": [...]}` of up to `batch` jobs."""
    for start in range(first, first + jobs, batch):
        chunk = [event(i) for i in range(start, min(first + jobs, start + batch))]
        yield chunk[0] if batch == 1 else {"jobs": chunk}


async def measure(
    target: Target, *, jobs: int, batch: int, connections: int, timeout: float, first: int
) -> Round:
    """Submit `jobs` jobs with `connections` concurrent clients and wait until all are done."""
    target.check_alive()
    baseline = await target.counter.done()
    bodies = requests_for(jobs, batch, first)
    errors = 0
    accepted = 0
    answered = 0.0  # perf_counter of the latest answer
    path = target.path(batch)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=target.base_url, headers=target.headers, timeout=60.0, limits=limits
    ) as http:

        async def client() -> None:
            nonlocal errors, accepted, answered
            for body in bodies:  # shared iterator: each body is sent once
                response = await http.post(path, json=body)
                answered = time.perf_counter()
                if response.status_code == 202:
                    accepted += len(body["jobs"]) if batch > 1 else 1
                else:
                    errors += 1
                    print(f"  {target.label}: HTTP {response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        submitting = asyncio.gather(*(client() for _ in range(connections)))
        submit_s = first_done_s = done_s = 0.0
        deadline = started + timeout
        while True:
            done = await target.counter.done() - baseline
            now = time.perf_counter() - started
            if done and not first_done_s:
                first_done_s = now
            if submitting.done() and not submit_s:
                submitting.result()  # raise a client's exception
                submit_s = answered - started
            if submit_s and done >= accepted:
                done_s = now
                break
            if time.perf_counter() > deadline:
                target.check_alive()
                errors += max(1, accepted - done)
                done_s = now
                print(f"  {target.label}: {done}/{accepted} jobs done after {timeout:.0f} s")
                break
            await asyncio.sleep(POLL_S)
        if not submitting.done():
            await submitting
    return Round(
        jobs=accepted, submit_s=submit_s, first_done_s=first_done_s, done_s=done_s, errors=errors
    )


def fmt_row(label: str, r: Round) -> str:
    return (
        f"{label:<34} {r.jobs:>6} {r.submit_s:>9.2f} {r.first_done_s:>9.2f} {r.done_s:>9.2f} "
        f"{r.rate:>9.1f} {r.errors:>6}"
    )


async def run(args: argparse.Namespace, targets: list[Target]) -> int:
    submitted = 0
    print(f"\nwarm-up: {args.warmup_jobs} jobs per target")
    for target in targets:
        warm = await measure(
            target,
            jobs=args.warmup_jobs,
            batch=max(args.batch),
            connections=args.connections,
            timeout=args.timeout,
            first=submitted,
        )
        submitted += args.warmup_jobs
        if warm.errors:
            print(f"warm-up of {target.label} failed: {warm}")
            for process in target.processes:
                print(f"`{' '.join(process.argv)}` output:\n{process.output()}")
            return 1

    header = (
        f"{'target':<34} {'jobs':>6} {'submit s':>9} {'first s':>9} {'all s':>9} "
        f"{'jobs/s':>9} {'errors':>6}"
    )
    for batch in args.batch:
        print(
            f"\n== {'single jobs (POST one job)' if batch == 1 else f'batches of {batch}'}, "
            f"{args.jobs} jobs, {args.connections} concurrent clients"
        )
        print(header)
        for round_no in range(args.rounds):
            # Rotate the order so no target always runs first (or right after another).
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                measured = await measure(
                    target,
                    jobs=args.jobs,
                    batch=batch,
                    connections=args.connections,
                    timeout=args.timeout,
                    first=submitted,
                )
                submitted += args.jobs
                target.results.setdefault(batch, []).append(measured)
                print(fmt_row(f"{target.label} #{round_no + 1}", measured), flush=True)

    failed = any(r.errors for t in targets for rs in t.results.values() for r in rs)
    jobgates = [t for t in targets if t.kind == "jobgate"]
    celeries = [t for t in targets if t.kind == "celery"]
    for batch in args.batch:
        print(f"\n-- {'single jobs' if batch == 1 else f'batches of {batch}'}: median jobs/s")
        for target in targets:
            rates = [r.rate for r in target.results[batch]]
            print(f"{target.label:<34} {statistics.median(rates):>9.1f}")
        for jg in jobgates:
            for cel in celeries:
                ratios = [
                    j.rate / c.rate if c.rate else 0.0
                    for j, c in zip(jg.results[batch], cel.results[batch], strict=True)
                ]
                detail = f" (rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
                print(f"ratio {jg.label} / {cel.label}: {statistics.median(ratios):.3f}{detail}")
    for target in jobgates:
        if isinstance(target.counter, JobStore):
            print(f"{target.label} job statuses: {await target.counter.statuses()}")
    for target in targets:
        await target.counter.close()
    if failed:
        print("ERROR: some requests or jobs failed (see the errors column); figures not valid")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per target and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; median kept")
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[100],
        help="jobs per request, 1..100 (1: the single-job endpoints); several = several runs",
    )
    parser.add_argument("--connections", type=int, default=4, help="concurrent clients")
    parser.add_argument("--warmup-jobs", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per round")
    parser.add_argument(
        "--sync",
        choices=["FULL", "NORMAL", "both"],
        default="FULL",
        help="JOBGATE_SQLITE_SYNCHRONOUS (FULL, the default, fsyncs every commit)",
    )
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL even if configured")
    parser.add_argument(
        "--celery",
        choices=["defaults", "durable", "both"],
        default="both",
        help="Celery defaults, and/or acks_late + a Redis result backend",
    )
    parser.add_argument("--celery-pool", choices=["threads", "prefork", "solo"], default="threads")
    parser.add_argument(
        "--celery-concurrency",
        type=int,
        default=JOBGATE_CONCURRENCY,
        help="Celery worker concurrency (default: jobgate's consumer concurrency per queue)",
    )
    args = parser.parse_args()
    if not all(1 <= b <= 100 for b in args.batch):
        parser.error("--batch must be 1..100")

    syncs = ["FULL", "NORMAL"] if args.sync == "both" else [args.sync]
    postgres = None if args.no_pg else pg_url()
    variants = [False, True] if args.celery == "both" else [args.celery == "durable"]

    asyncio.run(flush_redis())
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jobgate-bench-")))
        topology = write_topology(tmp / "wrangler.jsonc")
        targets: list[Target] = []
        for sync in syncs:
            url = f"sqlite:///{tmp / f'e2e-{sync}.db'}"
            targets.append(
                start_jobgate(stack, f"jobgate SQLite {sync}", url, None, sync, topology)
            )
        if postgres:
            schema = stack.enter_context(pg_schema(postgres))
            targets.append(
                start_jobgate(stack, "jobgate PostgreSQL", postgres, schema, "FULL", topology)
            )
        for durable in variants:
            targets.append(start_celery(stack, durable, args.celery_pool, args.celery_concurrency))
        print(
            f"jobs={args.jobs} rounds={args.rounds} batch={args.batch} "
            f"connections={args.connections} poll={POLL_S * 1000:.0f}ms cpus={os.cpu_count()} "
            f"python={platform.python_version()}"
        )
        print(
            f"jobgate consumer: 1 process, batches of 100, max_batch_timeout 0, "
            f"{JOBGATE_CONCURRENCY} handlers at once; celery worker: --pool {args.celery_pool} "
            f"--concurrency {args.celery_concurrency}, broker {REDIS_URL}"
        )
        try:
            return asyncio.run(run(args, targets))
        finally:
            asyncio.run(flush_redis())


if __name__ == "__main__":
    sys.exit(main())
