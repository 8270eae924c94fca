"""`make bench` / `make bench-quick`: every benchmark against its baseline, one report.

    .venv/bin/python -m bench.suite            # full: 3 rounds, SQLite and PostgreSQL
    .venv/bin/python -m bench.suite --quick    # 1 round, SQLite, short loads (~2 min)

Runs, on real processes over loopback, in the same run and alternating targets:

1. accept: `POST /v1/jobs` on bare FastAPI (`bench/bare_app.py`), FastAPI + Celery
   `apply_async` to Redis (`bench/celery_app.py`, no worker) and `jobgate serve` per database,
   at each concurrency, with wrk (else `bench/httpx_load.py`); the server's CPU seconds per
   request from /proc; then each target at half its best rate with the open-loop generator
   `bench/fixed_rate.py` for the p99 latency;
2. batch: `POST /v1/jobs/batch` with 1..100 jobs per request, same targets;
3. end to end, no-op handlers: `jobgate serve` + `jobgate consume` per database vs FastAPI +
   Celery worker + Redis, submitting batches of 100 for a fixed time (the backlog is capped
   so a fast producer cannot bury a slow consumer), sampling jobs done, backlog and RSS;
4. end to end, real handlers: `jobgate dev` as shipped draining `analytics-event` jobs.

The gateway's RSS is sampled from /proc throughout. Raw figures go to
`<out>/raw/results.json` (after each section, so a failed run keeps what it measured), then
`bench/report.py` writes `<out>/REPORT.md` and its PNG plots. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # for tests.support and bench.* when run as a script

import httpx  # noqa: E402
import redis  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench import procstat  # noqa: E402
from bench.accept_throughput import (  # noqa: E402
    BENCH_DIR,
    JOB_BODY,
    UNLIMITED_ADMISSION,
    Generator,
    Measurement,
    gateway_env,
    httpx_generator,
    start_gateway,
    uvicorn_argv,
    with_port,
    wrk_generator,
)
from bench.e2e_throughput import (  # noqa: E402
    REDIS_URL,
    UVICORN_FLAGS,
    JobStore,
    event,
    start_celery,
    start_jobgate,
    with_pythonpath,
    write_topology,
)
from bench.e2e_throughput import Target as E2ETarget  # noqa: E402
from bench.report import goals_markdown, write_report  # noqa: E402
from tests.support.databases import fresh_pg_schema  # noqa: E402
from tests.support.servers import (  # noqa: E402
    ServerProcess,
    create_tenant,
    db_upgrade,
    jobgate_argv,
    jobgate_env,
)

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
RSS_SAMPLE_S = 0.5
E2E_SAMPLE_S = 0.25
E2E_CLIENTS = 4
console = Console(stderr=True)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how often: `make bench` runs FULL, `make bench-quick` QUICK."""

    mode: str
    rounds: int
    connections: list[int]
    accept_s: float  # per target, concurrency and round
    warmup_s: float
    fixed_rate_s: float
    fixed_rate_connections: int
    batch_sizes: list[int]
    batch_connections: int
    batch_s: float
    e2e_s: float  # load time of the sustained end-to-end run
    e2e_max_backlog: int  # the producer pauses above this many unfinished jobs
    e2e_drain_timeout_s: float
    analytics_jobs: int
    analytics_timeout_s: float
    postgres: bool


FULL = Plan(
    mode="full",
    rounds=3,
    connections=[1, 2, 4, 8, 16, 32, 64],
    accept_s=5.0,
    warmup_s=2.0,
    fixed_rate_s=10.0,
    fixed_rate_connections=32,
    batch_sizes=[1, 10, 50, 100],
    batch_connections=8,
    batch_s=5.0,
    e2e_s=15.0,
    e2e_max_backlog=20_000,
    e2e_drain_timeout_s=60.0,
    analytics_jobs=20_000,
    analytics_timeout_s=180.0,
    postgres=True,
)
QUICK = Plan(
    mode="quick",
    rounds=1,
    connections=[1, 8, 32],
    accept_s=2.0,
    warmup_s=1.0,
    fixed_rate_s=2.0,
    fixed_rate_connections=32,
    batch_sizes=[10, 100],
    batch_connections=8,
    batch_s=2.0,
    e2e_s=4.0,
    e2e_max_backlog=3_000,
    e2e_drain_timeout_s=8.0,
    analytics_jobs=5_000,
    analytics_timeout_s=8.0,
    postgres=False,
)


# -- recording -------------------------------------------------------------------------------


class Results:
    """The raw figures of one run, saved as JSON after every section."""

    def __init__(self, path: Path, plan: Plan, generator: str, databases: list[str]) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "meta": {
                "mode": plan.mode,
                "plan": asdict(plan),
                "generator": generator,
                "databases": databases,
                "machine": procstat.machine().as_dict(),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "load_start": procstat.load_average(),
                "notes": [],
            },
            "sections": {},
            "accept": [],
            "fixed_rate": [],
            "batch": [],
            "e2e": [],
            "analytics": [],
            "rss": [],
        }
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def add(self, kind: str, row: dict[str, Any]) -> None:
        with self._lock:  # the RSS sampler adds from its thread
            self.data[kind].append(row)

    def note(self, text: str) -> None:
        console.print(f"[yellow]note:[/yellow] {text}")
        self.data["meta"]["notes"].append(text)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        self.data["sections"][name] = {
            "load_start": procstat.load_average(),
            "t_start": self.elapsed(),
        }
        try:
            yield
        finally:
            self.data["sections"][name]["load_end"] = procstat.load_average()
            self.data["sections"][name]["t_end"] = self.elapsed()
            self.save()

    def save(self) -> None:
        self.data["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.data["meta"]["load_end"] = procstat.load_average()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            raw = json.dumps(self.data, indent=1)
        self.path.write_text(raw)


class RssSampler(threading.Thread):
    """Samples the RSS of the watched gateway processes every RSS_SAMPLE_S, all run long."""

    def __init__(self, results: Results) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.results = results
        self._watched: dict[str, int] = {}
        self._section = ""
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def watch(self, label: str, pid: int) -> None:
        with self._lock:
            self._watched[label] = pid

    def unwatch_all(self) -> None:
        with self._lock:
            self._watched.clear()

    def set_section(self, name: str) -> None:
        self._section = name

    def run(self) -> None:
        while not self._halt.wait(RSS_SAMPLE_S):
            with self._lock:
                watched = list(self._watched.items())
            for label, pid in watched:
                rss = procstat.rss_bytes(pid)
                if rss:
                    self.results.add(
                        "rss",
                        {
                            "t": round(self.results.elapsed(), 2),
                            "label": label,
                            "section": self._section,
                            "rss_mb": round(rss / 2**20, 1),
                        },
                    )

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# -- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Database:
    """A migrated database with one tenant, ready before its section starts."""

    url: str
    schema: str | None
    api_key: str


def prepare_database(url: str, schema: str | None) -> Database:
    env = jobgate_env(url, schema=schema)
    db_upgrade(env)
    return Database(url, schema, create_tenant(env, "bench")["api_key"])


@dataclass(slots=True)
class HttpTarget:
    """A server loaded by the accept and batch benchmarks."""

    label: str
    kind: str  # bare | celery | jobgate
    db: str | None
    server: ServerProcess
    key: str
    single_path: str
    batch_path: str


def flush_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def start_all(stack: ExitStack, builders: list[Callable[[ExitStack], T]]) -> list[T]:
    """Start independent processes at once (migrations and imports are slow on a busy
    machine); each builder registers its clean-up on its own stack, all kept by `stack`."""

    def build(builder: Callable[[ExitStack], T]) -> tuple[T, ExitStack]:
        own = ExitStack()
        try:
            return builder(own), own
        except BaseException:
            own.close()
            raise

    with ThreadPoolExecutor(max_workers=len(builders) or 1) as pool:
        futures = [pool.submit(build, builder) for builder in builders]
    started, owns, failures = [], [], []
    for future in futures:
        try:
            value, own = future.result()
        except Exception as exc:
            failures.append(exc)
            continue
        owns.append(own)
        started.append(value)
    stack.callback(close_all, owns)
    if failures:
        raise failures[0]
    return started


def close_all(stacks: list[ExitStack]) -> None:
    """Stop processes at once: each waits for its own graceful shutdown."""
    with ThreadPoolExecutor(max_workers=len(stacks) or 1) as pool:
        for future in [pool.submit(own.close) for own in stacks]:
            future.result()


def start_bare(tmp: Path) -> Callable[[ExitStack], HttpTarget]:
    def build(stack: ExitStack) -> HttpTarget:
        env = jobgate_env(f"sqlite:///{tmp / 'unused.db'}")
        argv = with_port(uvicorn_argv("bare_app:app", app_dir=BENCH_DIR))
        server = stack.enter_context(ServerProcess(argv, env=env))
        return HttpTarget(
            "bare FastAPI", "bare", None, server, "unused", "/v1/jobs", "/v1/jobs/batch"
        )

    return build


def start_celery_api(stack: ExitStack) -> HttpTarget:
    """The Celery baseline's FastAPI half only: no worker consumes the accept benchmark's tasks."""
    env = with_pythonpath(
        {**os.environ, "BENCH_CELERY_BROKER": REDIS_URL, "BENCH_CELERY_QUEUE": "bench-accept"}
    )
    argv = [sys.executable, "-m", "uvicorn", "bench.celery_app:app", *UVICORN_FLAGS]
    server = stack.enter_context(
        ServerProcess(lambda port: [*argv, "--no-access-log", "--port", str(port)], env=env)
    )
    return HttpTarget("FastAPI + Celery", "celery", None, server, "unused", "/jobs", "/jobs/batch")


def start_serve(db: str, database: Database) -> Callable[[ExitStack], HttpTarget]:
    def build(stack: ExitStack) -> HttpTarget:
        env = gateway_env(database.url, database.schema, "FULL")
        gateway = start_gateway(stack, f"jobgate {db}", env, serve=True, api_key=database.api_key)
        return HttpTarget(
            gateway.label,
            "jobgate",
            db,
            gateway.server,
            gateway.api_key,
            "/v1/jobs",
            "/v1/jobs/batch",
        )

    return build


def batch_body(size: int) -> str:
    return json.dumps({"jobs": [event(i) for i in range(size)]}, separators=(",", ":"))


def make_generator(use_wrk: bool, body: str) -> Generator:
    if use_wrk:
        return wrk_generator(1, body)
    return functools.partial(httpx_generator, body=body)


def load_once(
    generator: Generator, target: HttpTarget, path: str, seconds: float, connections: int
) -> tuple[Measurement, float]:
    """One closed-loop load and the server's CPU seconds it cost."""
    cpu_before = procstat.cpu_seconds(target.server.pid)
    measured = generator(target.server.url(path), target.key, seconds, connections)
    cpu = procstat.cpu_seconds(target.server.pid) - cpu_before
    if target.kind == "celery":
        flush_redis()  # nothing consumes the accept benchmark's tasks
    return measured, cpu


def fixed_rate(target: HttpTarget, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(BENCH_DIR / "fixed_rate.py"),
        target.server.url(target.single_path),
        "--rate",
        f"{rate:.1f}",
        "--duration",
        str(seconds),
        "--connections",
        str(connections),
        "--body",
        JOB_BODY,
        "-H",
        "Content-Type: application/json",
        "-H",
        f"Authorization: Bearer {target.key}",
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=seconds * 5 + 120
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if target.kind == "celery":
        flush_redis()
    return result


# -- end to end ------------------------------------------------------------------------------


async def drive(
    target: E2ETarget,
    *,
    batch: int,
    seconds: float | None,
    jobs: int | None,
    max_backlog: int,
    drain_timeout: float,
    first: int,
    rss_pid: int | None,
) -> dict[str, Any]:
    """Submit batches until `seconds` pass or `jobs` are accepted, then wait for the drain.

    Samples every E2E_SAMPLE_S: jobs done (the target's ground truth), jobs accepted, their
    difference (the backlog) and the gateway's RSS. The producer pauses while the backlog
    is above `max_backlog`, so the run measures what the consumer sustains.
    """
    target.check_alive()
    baseline = await target.counter.done()
    accepted = errors = done = 0
    numbers = itertools.count(first)
    limits = httpx.Limits(max_connections=E2E_CLIENTS, max_keepalive_connections=E2E_CLIENTS)
    series: dict[str, list[float]] = {
        "t": [],
        "done": [],
        "accepted": [],
        "backlog": [],
        "rss_mb": [],
    }
    async with httpx.AsyncClient(
        base_url=target.base_url, headers=target.headers, timeout=60.0, limits=limits
    ) as http:
        started = time.perf_counter()
        stop_at = started + seconds if seconds is not None else float("inf")
        planned = jobs if jobs is not None else float("inf")
        sent = 0

        async def client() -> None:
            nonlocal accepted, errors, sent
            while time.perf_counter() < stop_at and sent < planned:
                if accepted - done > max_backlog:
                    await asyncio.sleep(0.02)
                    continue
                size = int(min(batch, planned - sent))
                sent += size
                body = {"jobs": [event(next(numbers)) for _ in range(size)]}
                try:
                    response = await http.post(target.batch_path, json=body)
                except httpx.TransportError as exc:  # counted; the run goes on
                    errors += 1
                    console.print(f"  {target.label}: {type(exc).__name__} {exc}")
                    await asyncio.sleep(0.1)
                    continue
                if response.status_code == 202:
                    accepted += size
                else:
                    errors += 1
                    if errors <= 3:
                        console.print(
                            f"  {target.label}: HTTP {response.status_code} {response.text[:200]}"
                        )

        submitting = asyncio.gather(*(client() for _ in range(E2E_CLIENTS)))
        load_s: float | None = None
        drained = False
        while True:
            await asyncio.sleep(E2E_SAMPLE_S)
            done = await target.counter.done() - baseline
            now = time.perf_counter() - started
            series["t"].append(round(now, 3))
            series["done"].append(done)
            series["accepted"].append(accepted)
            series["backlog"].append(max(0, accepted - done))
            rss = procstat.rss_bytes(rss_pid) if rss_pid else 0
            series["rss_mb"].append(round(rss / 2**20, 1))
            if submitting.done() and load_s is None:
                submitting.result()  # a client's exception
                load_s = now
            if load_s is not None and done >= accepted:
                drained = True
                break
            if load_s is not None and now > load_s + drain_timeout:
                target.check_alive()
                break
        if not submitting.done():
            await submitting
    window = seconds if seconds is not None else None
    return {
        "jobs": accepted,
        "errors": errors,
        "load_s": load_s,
        "all_done_s": series["t"][-1] if drained else None,
        "drained": drained,
        "done": series["done"][-1],
        "sustained_jobs_per_s": sustained_rate(series, window),
        # Not drained in time: the rate so far (the consumer was busy all along), flagged.
        "jobs_per_s": (series["done"][-1] / series["t"][-1]) if series["t"][-1] else None,
        "series": series,
    }


def sustained_rate(series: dict[str, list[float]], window: float | None) -> float | None:
    """Jobs done per second over the load window (the last sample inside it)."""
    if window is None:
        return None
    inside = [i for i, t in enumerate(series["t"]) if t <= window]
    if not inside:
        return None
    last = inside[-1]
    return series["done"][last] / series["t"][last] if series["t"][last] else None


def start_e2e_jobgate(
    db: str, database: Database, topology: Path
) -> Callable[[ExitStack], E2ETarget]:
    """`jobgate serve` + `jobgate consume` with no-op handlers (bench/e2e_throughput.py)."""
    return lambda stack: start_jobgate(
        stack, f"jobgate {db}", database.url, database.schema, "FULL", topology, database.api_key
    )


def start_dev(stack: ExitStack, db: str, database: Database) -> E2ETarget:
    """`jobgate dev` as shipped (topology, handlers, batch sizes), admission limits raised.
    The database has a tenant already, so dev keeps its hands off the tenants."""
    url, schema = database.url, database.schema
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_RATE_LIMIT_JOBS": "100000000/minute",
            "JOBGATE_ADMISSION_RATE_LIMIT_BATCH": "100000000/minute",
            **UNLIMITED_ADMISSION,
        },
    )
    key = database.api_key
    server = stack.enter_context(ServerProcess(jobgate_argv("dev"), env=env, startup_timeout=60))
    return E2ETarget(
        label=f"jobgate dev {db}",
        base_url=server.base_url,
        single_path="/v1/jobs",
        batch_path="/v1/jobs/batch",
        headers={"Authorization": f"Bearer {key}"},
        counter=JobStore(url, schema),
        processes=[],
        kind="jobgate",
        server=server,
    )


# -- the run ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Runner:
    plan: Plan
    results: Results
    sampler: RssSampler
    progress: Progress
    task: Any
    use_wrk: bool
    pg_url: str | None
    submitted: int = 0
    prepared: dict[str, dict[str, Database]] = field(default_factory=dict)

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def advance(self) -> None:
        self.progress.advance(self.task)

    def log(self, text: str) -> None:
        self.progress.console.print(text, soft_wrap=True, highlight=False)

    def prepare(self, stack: ExitStack, sections: list[str]) -> None:
        """Fresh databases for every section (a new SQLite file, a new PostgreSQL schema),
        migrated and given a tenant all at once before anything is measured: on a busy
        machine the `jobgate db upgrade` and `tenants create` processes take seconds each."""
        todo: dict[tuple[str, str], tuple[str, str | None]] = {}
        for section in sections:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{section}-")))
            todo[section, "SQLite"] = (f"sqlite:///{tmp / 'jobgate.db'}", None)
            if self.pg_url:
                schema = stack.enter_context(fresh_pg_schema(self.pg_url, "bench"))
                todo[section, "PostgreSQL"] = (self.pg_url, schema)
        with ThreadPoolExecutor(max_workers=len(todo) or 1) as pool:
            futures = {key: pool.submit(prepare_database, *where) for key, where in todo.items()}
        for (section, db), future in futures.items():
            self.prepared.setdefault(section, {})[db] = future.result()

    def databases(self, section: str) -> dict[str, Database]:
        return self.prepared[section]

    def rotated(self, items: list[Any], round_no: int) -> list[Any]:
        shift = round_no % len(items)
        return items[shift:] + items[:shift]

    # -- 1 + 2: accept, fixed rate, batch --

    def run_http(self) -> None:
        plan = self.plan
        dbs = self.databases("http")
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-bare-")))
            self.step("starting bare FastAPI, FastAPI + Celery, jobgate serve")
            targets = start_all(
                stack,
                [
                    start_bare(tmp),
                    start_celery_api,
                    *(start_serve(db, database) for db, database in dbs.items()),
                ],
            )
            for t in targets:
                if t.kind == "jobgate":
                    self.sampler.watch(f"{t.label} (accept, batch)", t.server.pid)
            flush_redis()
            single = make_generator(self.use_wrk, JOB_BODY)
            self.sampler.set_section("accept")
            with self.results.section("accept"):
                for t in targets:
                    self.step(f"warm-up {t.label}")
                    load_once(single, t, t.single_path, plan.warmup_s, 16)
                for round_no in range(plan.rounds):
                    for connections in plan.connections:
                        for t in self.rotated(targets, round_no):
                            self.step(f"accept round {round_no + 1} -c{connections} {t.label}")
                            m, cpu = load_once(single, t, t.single_path, plan.accept_s, connections)
                            self.results.add(
                                "accept",
                                {
                                    "target": t.label,
                                    "kind": t.kind,
                                    "db": t.db,
                                    "round": round_no + 1,
                                    "connections": connections,
                                    "rps": m.rps,
                                    "p50_ms": m.p50_ms,
                                    "p99_ms": m.p99_ms,
                                    "requests": m.requests,
                                    "errors": m.errors,
                                    "cpu_us_per_req": cpu * 1e6 / m.requests
                                    if m.requests
                                    else None,
                                },
                            )
                            self.log(
                                f"accept  {t.label:<22} -c{connections:<3} {m.rps:>9.0f} req/s  "
                                f"p50 {m.p50_ms:>7.1f} ms  p99 {m.p99_ms:>7.1f} ms  "
                                f"cpu {cpu * 1e6 / max(1, m.requests):>6.0f} µs/req  "
                                f"errors {m.errors}"
                            )
                            self.advance()
            # The goal is jobgate's; bare FastAPI shows the floor of server + generator.
            open_loop = [t for t in targets if t.kind != "celery"]
            self.sampler.set_section("fixed rate")
            with self.results.section("fixed_rate"):
                for round_no in range(plan.rounds):
                    for t in self.rotated(open_loop, round_no):
                        best = max(
                            (
                                r["rps"]
                                for r in self.results.data["accept"]
                                if r["target"] == t.label
                            ),
                            default=0.0,
                        )
                        rate = best / 2
                        self.step(f"fixed rate round {round_no + 1} {t.label} at {rate:.0f}/s")
                        if rate < 1:
                            self.advance()
                            continue
                        fr = fixed_rate(t, rate, plan.fixed_rate_s, plan.fixed_rate_connections)
                        self.results.add(
                            "fixed_rate",
                            {
                                "target": t.label,
                                "kind": t.kind,
                                "db": t.db,
                                "round": round_no + 1,
                                "max_rps": best,
                                **fr,
                            },
                        )
                        self.log(
                            f"p99@½max {t.label:<22} {rate:>7.0f}/s asked, "
                            f"{fr['achieved_rps']:>7.0f}/s done  p50 {fr['p50_ms']:>7.1f} ms  "
                            f"p99 {fr['p99_ms']:>7.1f} ms  "
                            f"late {fr['late']}  errors {fr['errors']}"
                        )
                        self.advance()
            self.sampler.set_section("batch")
            with self.results.section("batch"):
                for round_no in range(plan.rounds):
                    for size in plan.batch_sizes:
                        gen = make_generator(self.use_wrk, batch_body(size))
                        for t in self.rotated(targets, round_no):
                            self.step(f"batch round {round_no + 1} x{size} {t.label}")
                            m, cpu = load_once(
                                gen, t, t.batch_path, plan.batch_s, plan.batch_connections
                            )
                            jobs = m.requests * size
                            self.results.add(
                                "batch",
                                {
                                    "target": t.label,
                                    "kind": t.kind,
                                    "db": t.db,
                                    "round": round_no + 1,
                                    "batch": size,
                                    "rps": m.rps,
                                    "jobs_per_s": m.rps * size,
                                    "p50_ms": m.p50_ms,
                                    "p99_ms": m.p99_ms,
                                    "errors": m.errors,
                                    "cpu_us_per_job": cpu * 1e6 / jobs if jobs else None,
                                },
                            )
                            self.log(
                                f"batch   {t.label:<22} x{size:<3} {m.rps * size:>9.0f} jobs/s  "
                                f"p99 {m.p99_ms:>7.1f} ms  "
                                f"cpu {cpu * 1e6 / max(1, jobs):>6.0f} µs/job  errors {m.errors}"
                            )
                            self.advance()
            self.sampler.unwatch_all()
            flush_redis()

    # -- 3: end to end, no-op handlers --

    def run_e2e(self) -> None:
        dbs = self.databases("e2e")
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-e2e-")))
            topology = write_topology(tmp / "wrangler.jsonc")
            flush_redis()
            stack.callback(flush_redis)
            self.step("starting jobgate serve + consume, FastAPI + Celery worker")
            builders = [start_e2e_jobgate(db, database, topology) for db, database in dbs.items()]
            builders.append(
                lambda own: replace(
                    start_celery(own, False, "threads", 10), label="FastAPI + Celery"
                )
            )
            targets = start_all(stack, builders)
            for t in targets:
                if t.kind == "jobgate" and t.server:
                    self.sampler.watch(f"{t.label} (e2e)", t.server.pid)
            self.sampler.set_section("e2e")
            with self.results.section("e2e"):
                asyncio.run(self.e2e_rounds(targets))
            self.sampler.unwatch_all()

    async def e2e_rounds(self, targets: list[E2ETarget]) -> None:
        plan = self.plan
        try:
            for t in targets:
                self.step(f"e2e warm-up {t.label}")
                await self.drive(t, seconds=None, jobs=200, max_backlog=10**9, drain=30)
            for round_no in range(plan.rounds):
                for t in self.rotated(targets, round_no):
                    self.step(f"e2e round {round_no + 1} {t.label} ({plan.e2e_s:.0f} s load)")
                    r = await self.drive(
                        t,
                        seconds=plan.e2e_s,
                        jobs=None,
                        max_backlog=plan.e2e_max_backlog,
                        drain=plan.e2e_drain_timeout_s,
                    )
                    db = t.label.removeprefix("jobgate ") if t.kind == "jobgate" else None
                    row = {"target": t.label, "kind": t.kind, "db": db, "round": round_no + 1}
                    self.results.add("e2e", {**row, **r})
                    self.log_e2e("e2e", t.label, r)
                    self.advance()
        finally:
            for t in targets:
                await t.counter.close()

    async def drive(
        self,
        t: E2ETarget,
        *,
        seconds: float | None,
        jobs: int | None,
        max_backlog: int,
        drain: float,
    ) -> dict[str, Any]:
        r = await drive(
            t,
            batch=100,
            seconds=seconds,
            jobs=jobs,
            max_backlog=max_backlog,
            drain_timeout=drain,
            first=self.submitted,
            rss_pid=t.server.pid if t.kind == "jobgate" and t.server else None,
        )
        self.submitted += r["jobs"] + 100
        return r

    def log_e2e(self, kind: str, label: str, r: dict[str, Any]) -> None:
        sustained = r["sustained_jobs_per_s"]
        overall = r["jobs_per_s"]
        self.log(
            f"{kind:<8} {label:<22} {r['jobs']:>6} jobs  "
            + (f"sustained {sustained:>7.0f} jobs/s  " if sustained is not None else "")
            + (
                f"all done in {r['all_done_s']:.1f} s = {overall:.0f} jobs/s"
                if r["drained"]
                else f"NOT drained in time ({r['done']}/{r['jobs']}, {overall or 0:.0f} jobs/s)"
            )
            + f"  errors {r['errors']}"
        )

    # -- 4: end to end, `jobgate dev` with the real analytics handler --

    def run_analytics(self) -> None:
        dbs = self.databases("dev")
        with ExitStack() as stack:
            self.step("starting jobgate dev")
            targets = start_all(
                stack,
                [
                    functools.partial(start_dev, db=db, database=database)
                    for db, database in dbs.items()
                ],
            )
            for t in targets:
                if t.server:
                    self.sampler.watch(t.label, t.server.pid)
            self.sampler.set_section("analytics")
            with self.results.section("analytics"):
                asyncio.run(self.analytics_rounds(targets))
            self.sampler.unwatch_all()

    async def analytics_rounds(self, targets: list[E2ETarget]) -> None:
        plan = self.plan
        try:
            for round_no in range(plan.rounds):
                for t in self.rotated(targets, round_no):
                    self.step(
                        f"analytics round {round_no + 1} {t.label}: {plan.analytics_jobs} jobs"
                    )
                    r = await self.drive(
                        t,
                        seconds=None,
                        jobs=plan.analytics_jobs,
                        max_backlog=10**9,
                        drain=plan.analytics_timeout_s,
                    )
                    db = t.label.removeprefix("jobgate dev ")
                    row = {"target": t.label, "kind": "jobgate", "db": db, "round": round_no + 1}
                    self.results.add("analytics", {**row, **r})
                    self.log_e2e("dev", t.label, r)
                    self.advance()
        finally:
            for t in targets:
                await t.counter.close()


def pg_server_note(url: str) -> str:
    """The PostgreSQL server's version and vacuum setting: with autovacuum off, tables keep
    the statistics of their first rows, which changes plans as a run's tables grow."""
    import asyncpg  # type: ignore[import-untyped]  # no stubs; only with PostgreSQL

    async def read() -> str:
        connection = await asyncpg.connect(url)
        try:
            version = await connection.fetchval("SHOW server_version")
            autovacuum = await connection.fetchval("SHOW autovacuum")
        finally:
            await connection.close()
        return f"PostgreSQL server {version}, autovacuum {autovacuum}"

    try:
        return asyncio.run(read())
    except Exception as exc:  # a note only: the run goes on without it
        return f"PostgreSQL server settings unreadable: {type(exc).__name__}"


def pg_reachable(url: str) -> str | None:
    """None when a schema can be made and dropped at `url`, else why not."""
    try:
        with fresh_pg_schema(url, "bench_probe"):
            return None
    except Exception as exc:  # any failure means: no PostgreSQL for this run
        return f"{type(exc).__name__}: {exc}"[:200]


def total_steps(plan: Plan, n_dbs: int) -> int:
    http_targets = 2 + n_dbs
    accept = plan.rounds * len(plan.connections) * http_targets
    fixed = plan.rounds * (http_targets - 1)
    batch = plan.rounds * len(plan.batch_sizes) * http_targets
    e2e = plan.rounds * (n_dbs + 1)
    analytics = plan.rounds * n_dbs
    return accept + fixed + batch + e2e + analytics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, SQLite, short loads")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--rounds", type=int, help="override the plan's rounds")
    parser.add_argument("--generator", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL for the full run (a fresh schema per section, dropped after)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["http", "e2e", "analytics"],
        default=["http", "e2e", "analytics"],
        help="run only these sections (the report shows what was measured)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        parser.error(f"the Celery baseline needs Redis at {REDIS_URL} ({exc})")
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and bool(shutil.which("wrk")))
    if args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install -y wrk)")
    pg_url = None
    databases = ["SQLite"]
    notes = []
    if plan.postgres and not args.no_pg:
        why_not = pg_reachable(args.pg_url)
        if why_not is None:
            pg_url = args.pg_url
            databases.append("PostgreSQL")
            notes.append(pg_server_note(pg_url))
        else:
            notes.append(f"PostgreSQL skipped: {why_not}")

    results = Results(
        args.out / "raw" / "results.json", plan, "wrk" if use_wrk else "httpx", databases
    )
    for note in notes:
        results.note(note)
    if not use_wrk:
        results.note("wrk not installed: httpx_load.py may cap the bare app and flatter ratios")
    sampler = RssSampler(results)
    sampler.start()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    failed = False
    with progress:
        task = progress.add_task("starting", total=total_steps(plan, len(databases)))
        runner = Runner(plan, results, sampler, progress, task, use_wrk, pg_url)

        sections: dict[str, Callable[[], None]] = {
            "http": runner.run_http,
            "e2e": runner.run_e2e,
            "analytics": runner.run_analytics,
        }
        with ExitStack() as run_stack:  # the prepared databases, dropped at the end
            runner.step("preparing databases (migrations, one tenant each)")
            runner.prepare(run_stack, [{"analytics": "dev"}.get(n, n) for n in args.only])
            for name in args.only:
                try:
                    sections[name]()
                except Exception as exc:  # keep the other sections' figures; note the failure
                    failed = True
                    results.note(f"section {name} failed: {type(exc).__name__}: {str(exc)[:600]}")
        sampler.stop()
        results.save()
    report = write_report(results.data, args.out)
    console.print(goals_markdown(results.data), soft_wrap=True, highlight=False)
    console.print(f"[bold green]report:[/bold green] {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
