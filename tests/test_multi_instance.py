"""Several instances at once: two gateways and two consumers on one PostgreSQL and one Redis.

Real processes: `jobgate serve` x2 (API, scheduler) and `jobgate consume` x2 running the
recording no-op handlers (`tests/support/recording_handlers.py`), on the run's PostgreSQL
schema, sharing a Redis key prefix (the rate limit). Jobs of every type are submitted through
both gateways; mid-run one consumer (while one of its handlers runs) and one gateway (while it
takes submissions) are SIGKILLed, then restarted. Time moves for every process at once through
the test clock file: each step lands one second past the next minute, so the cron schedules
tick once per step and the killed consumer's leases run out. Then:

- every job answered 202 is `succeeded` and its handler ran (so is any job whose answer was
  lost in the kill: those may or may not exist);
- no job had two runs at once, across consumers: runs (start/end as the handlers recorded them)
  of one job do not overlap, and a run killed with its consumer counts as running until its
  attempt's lease expired;
- every schedule fired exactly once for every minute the clock passed, and each fire's job
  succeeded;
- the shared rate limit held: a tenant allowed LIMIT jobs per WINDOW_S, hammered through both
  gateways at once, got at most LIMIT per window in total.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import json5
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admission.limiter import RouteClass
from app.admission.plans import set_plan
from app.core.clock import write_clock_offset
from app.core.config import REPO_ROOT
from app.core.db import create_sessionmaker, table_of
from app.jobs.models import FINISHED_STATUSES, Job, JobAttempt
from app.scheduler.models import ScheduleFire
from tests.conftest import REDIS_URL
from tests.factories import auth
from tests.support.databases import postgres_url_from_env
from tests.support.recording_handlers import LOG_ENV, Run, overlapping_runs, read_runs
from tests.support.servers import (
    ServerProcess,
    create_tenant,
    jobgate_env,
    jobgate_process,
    jobgate_server,
    run_jobgate,
)
from tests.support.waiting import wait_until

TOTAL_JOBS = 3000
BATCH = 25
SUBMITTERS = 4
LOAD_S = 20.0  # submissions are paced over this long, so the kills land mid-run
# One job in SLOW_EVERY sleeps SLOW_MS in its handler (others 0-20 ms).
SLOW_EVERY = 40
SLOW_MS = 1500
KILL_AT_ACCEPTED = 0.35
# Leases outlive a clock step (< 60 s) by far; the heartbeat renews them every second.
VISIBILITY_MS = 120_000
HEARTBEAT_MS = 1000
RATE_LIMIT = 20
RATE_WINDOW_S = 5
HAMMER_S = 12.0
MIN_TICKS = 4
TICK_GAP_S = 2.0
FIRE_TIMEOUT_S = 40.0  # the scheduler polls every 5 s
STALL_S = 4.0  # no job finished this long: step the clock (the killed leases must run out)
# Steps come at most this long apart (plus the wait for the fires), far below the 59 s after
# which real time would cross a minute by itself and fire a tick no step waited for.
MAX_STEP_GAP_S = 15.0
DRAIN_TIMEOUT_S = 120.0
SCHEDULES = {
    "orders-every-minute": {"type": "sync-orders", "siteId": "shop-1"},
    "events-every-minute": {"type": "analytics-event", "name": "tick"},
}

_jobs = table_of(Job)
_attempts = table_of(JobAttempt)
_fires = table_of(ScheduleFire)


def _job(n: int) -> dict[str, Any]:
    """Job number n of the load: every type in turn; every SLOW_EVERY-th one is slow."""
    if n % SLOW_EVERY == SLOW_EVERY - 1:
        slow = {"n": n, "sleep_ms": SLOW_MS}
        if (n // SLOW_EVERY) % 2:
            return {
                "type": "send-email",
                "to": f"u{n}@example.com",
                "subject": "slow",
                "templateId": "t",
                "variables": slow,
            }
        return {"type": "analytics-event", "name": "slow", "properties": slow}
    kind = n % 5
    if kind == 0:
        return {"type": "analytics-event", "name": "multi", "properties": {"n": n}}
    if kind == 1:
        return {
            "type": "send-email",
            "to": f"u{n}@example.com",
            "subject": "hi",
            "templateId": "t",
            "variables": {"n": n},
        }
    if kind == 2:
        return {"type": "sync-single-order", "orderId": n + 1}
    if kind == 3:
        return {
            "type": "process-image",
            "key": f"img/{n}.jpg",
            "operations": [{"type": "thumbnail", "width": 64, "height": 64}],
        }
    return {"type": "agent-task", "agentType": "multi", "dryRun": True}


class SharedClock:
    """The test clock file every process reads: real time plus an offset that only grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_ms = 0
        write_clock_offset(path, 0)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def to_next_minute(self) -> int:
        """Jump to one second past the next minute; returns that minute (ms)."""
        boundary = (self.now_ms() // 60_000 + 1) * 60_000
        self.offset_ms = boundary + 1000 - time.time_ns() // 1_000_000
        write_clock_offset(self.path, self.offset_ms)
        return boundary


@dataclass
class Cluster:
    gateways: list[ServerProcess]
    consumers: list[ServerProcess]
    clock: SharedClock
    engine: AsyncEngine
    record: Path
    # Gateway i takes requests; `kills[i]` counts its SIGKILLs (set before the signal, so an
    # error of a request in flight is known to be the kill's).
    up: list[bool] = field(default_factory=lambda: [True, True])
    kills: list[int] = field(default_factory=lambda: [0, 0])
    # Load requests waiting for gateway i's answer.
    in_flight: list[int] = field(default_factory=lambda: [0, 0])
    ticks: list[int] = field(default_factory=list)
    stepped_at: float = 0.0  # monotonic time of the latest clock step
    schedule_ids: list[str] = field(default_factory=list)

    def gateway(self, preferred: int) -> int:
        """Gateway `preferred` (mod 2) when it is up, else the other one."""
        index = preferred % 2
        return index if self.up[index] else 1 - index

    async def tick(self) -> None:
        """Step the clock to the next minute and wait until every schedule fired for it."""
        boundary = self.clock.to_next_minute()
        self.stepped_at = time.monotonic()
        self.ticks.append(boundary)
        when = datetime.fromtimestamp(boundary / 1000, tz=UTC)
        fired: Sequence[str] = []

        async def all_fired() -> bool:
            nonlocal fired
            async with self.engine.connect() as conn:
                query = select(_fires.c.schedule_id).where(_fires.c.scheduled_for == when)
                fired = (await conn.execute(query)).scalars().all()
            return len(fired) >= len(self.schedule_ids)

        await wait_until(
            all_fired,
            timeout=FIRE_TIMEOUT_S,
            interval=0.2,
            message=lambda: (
                f"the schedules did not fire for {when} within {FIRE_TIMEOUT_S} s "
                f"(fired: {fired})\n{self.logs()}"
            ),
        )

    def logs(self) -> str:
        parts = [f"--- gateway {i}\n{g.output()}" for i, g in enumerate(self.gateways)]
        parts += [f"--- consumer {i}\n{c.output()}" for i, c in enumerate(self.consumers)]
        return "\n".join(parts)


@dataclass
class Load:
    handed_out: int = 0
    accepted: list[str] = field(default_factory=list)
    unanswered: int = 0  # jobs of requests cut off by the kill: they may or may not exist
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Hit:
    gateway: int
    status: int | None  # None: cut off by the kill
    sent: float
    answered: float


def _topology(path: Path) -> Path:
    """The shipped topology, every queue consumed with long leases and no batch wait."""
    raw = json5.loads((REPO_ROOT / "wrangler.jsonc").read_text())
    consumers = {c["queue"]: c for c in raw["queues"]["consumers"]}
    for producer in raw["queues"]["producers"]:
        consumer = consumers.setdefault(producer["queue"], {"queue": producer["queue"]})
        consumer.update(visibility_timeout_ms=VISIBILITY_MS, max_batch_timeout=0)
    raw["queues"]["consumers"] = list(consumers.values())
    path.write_text(json.dumps(raw))
    return path


async def _submitter(http: httpx.AsyncClient, cluster: Cluster, key: str, load: Load) -> None:
    started = time.monotonic()
    request = 0
    while load.handed_out < TOTAL_JOBS and not load.unexpected:
        first = load.handed_out
        # One block of BATCH jobs in eight goes one job per request, the others as batches.
        count = 1 if first // BATCH % 8 == 7 else min(BATCH, TOTAL_JOBS - first)
        load.handed_out += count
        await asyncio.sleep(max(0.0, started + LOAD_S * first / TOTAL_JOBS - time.monotonic()))
        index = cluster.gateway(request)
        request += 1
        kills = cluster.kills[index]
        gateway = cluster.gateways[index]
        jobs = [_job(n) for n in range(first, first + count)]
        cluster.in_flight[index] += 1
        try:
            if count == 1:
                response = await http.post(gateway.url("/v1/jobs"), json=jobs[0], headers=auth(key))
            else:
                response = await http.post(
                    gateway.url("/v1/jobs/batch"), json={"jobs": jobs}, headers=auth(key)
                )
        except httpx.TransportError as exc:
            if cluster.kills[index] != kills:
                load.unanswered += count
            else:
                load.unexpected.append(f"gateway {index}: {exc!r}")
            continue
        finally:
            cluster.in_flight[index] -= 1
        if response.status_code != 202:
            load.unexpected.append(f"gateway {index}: HTTP {response.status_code} {response.text}")
            continue
        body = response.json()
        load.accepted.extend([body["id"]] if count == 1 else [j["id"] for j in body["jobs"]])


async def _hammer(
    http: httpx.AsyncClient, cluster: Cluster, key: str, preferred: int, hits: list[Hit]
) -> None:
    """Submit one job after another to gateway `preferred` (the other while it is down)."""
    body = {"type": "analytics-event", "name": "hammer"}
    end = time.monotonic() + HAMMER_S
    while time.monotonic() < end:
        index = cluster.gateway(preferred)
        kills = cluster.kills[index]
        sent = time.monotonic()
        try:
            response = await http.post(
                cluster.gateways[index].url("/v1/jobs"), json=body, headers=auth(key)
            )
        except httpx.TransportError:
            if cluster.kills[index] == kills:
                raise
            hits.append(Hit(index, None, sent, time.monotonic()))
            continue
        hits.append(Hit(index, response.status_code, sent, time.monotonic()))
        await asyncio.sleep(0.02)


def _busy_with_slow_run(record: Path, pid: int) -> bool:
    """The consumer `pid` runs a slow handler with at least 300 ms left."""
    now = time.monotonic_ns()
    return any(
        run.pid == pid and run.end_ns is None and run.start_ns + run.planned_ms * 1e6 - now > 3e8
        for run in read_runs(record).values()
    )


async def _kill_and_restart(cluster: Cluster, load: Load) -> int:
    """SIGKILL consumer 0 mid-handler and gateway 0 mid-load, then restart both; returns the
    killed consumer's pid."""

    def enough_accepted() -> bool:
        assert not load.unexpected, load.unexpected[:3]
        return len(load.accepted) >= KILL_AT_ACCEPTED * TOTAL_JOBS

    await wait_until(
        enough_accepted,
        timeout=LOAD_S * 2,
        message=lambda: f"only {len(load.accepted)} jobs accepted",
    )
    consumer, gateway = cluster.consumers[0], cluster.gateways[0]
    pid = consumer.pid
    await wait_until(
        lambda: _busy_with_slow_run(cluster.record, pid),
        timeout=15.0,
        interval=0.02,
        message="consumer 0 never ran a slow handler",
    )
    await asyncio.to_thread(consumer.kill)
    # The gateway dies with submissions in flight when the pacing allows (3 s at most).
    deadline = time.monotonic() + 3.0
    while cluster.in_flight[0] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    cluster.up[0] = False
    cluster.kills[0] += 1
    await asyncio.to_thread(gateway.kill)
    await asyncio.sleep(1.0)
    await asyncio.gather(asyncio.to_thread(consumer.start), asyncio.to_thread(gateway.start))
    cluster.up[0] = True
    return pid


async def _ticker(cluster: Cluster, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await cluster.tick()
        await asyncio.sleep(TICK_GAP_S)


async def _statuses(engine: AsyncEngine) -> Counter[str]:
    async with engine.connect() as conn:
        query = select(_jobs.c.status, _jobs.c.id)
        return Counter(status for status, _ in (await conn.execute(query)).all())


async def _drain(cluster: Cluster) -> Counter[str]:
    """Wait until every job is finished, stepping the clock while nothing moves (and at
    least every MAX_STEP_GAP_S)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    last, moved = Counter[str](), time.monotonic()
    while True:
        statuses = await _statuses(cluster.engine)
        if set(statuses) <= FINISHED_STATUSES:
            return statuses
        if statuses != last:
            last, moved = statuses, time.monotonic()
        elif time.monotonic() - moved > STALL_S:
            await cluster.tick()
            moved = time.monotonic()
        if time.monotonic() - cluster.stepped_at > MAX_STEP_GAP_S:
            await cluster.tick()
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs still unfinished: {dict(statuses)}\n{cluster.logs()}")
        await asyncio.sleep(0.25)


def test_overlap_check_finds_concurrent_runs() -> None:
    """The checker the system test relies on: what counts as two runs at once."""
    ms = 1_000_000
    done = Run("j", 1, 10, start_ns=0, start_clock_ms=1000, planned_ms=0, end_ns=50 * ms)
    after = Run("j", 2, 11, start_ns=60 * ms, start_clock_ms=1060, planned_ms=0, end_ns=70 * ms)
    during = Run("j", 2, 11, start_ns=40 * ms, start_clock_ms=1040, planned_ms=0, end_ns=90 * ms)
    killed = Run("j", 1, 10, start_ns=0, start_clock_ms=1000, planned_ms=0)
    leases = {("j", 1): 1050}
    assert overlapping_runs({"a": done, "b": after}, leases, killed=set()) == []
    assert len(overlapping_runs({"a": done, "b": during}, leases, killed=set())) == 1
    # A killed run holds its job until its lease expired (jobgate clock), not until the kill.
    assert overlapping_runs({"a": killed, "b": after}, leases, killed={10}) == []
    assert len(overlapping_runs({"a": killed, "b": during}, leases, killed={10})) == 1
    # A run that never ended in a live consumer holds its job for good.
    assert len(overlapping_runs({"a": killed, "b": after}, leases, killed=set())) == 1


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.skipif(
    postgres_url_from_env() is None,
    reason="several instances share one server database: needs JOBGATE_DATABASE_URL=postgresql://",
)
async def test_two_gateways_two_consumers_sigkill(
    database: tuple[str, str | None], db_engine: AsyncEngine, redis_prefix: str, tmp_path: Path
) -> None:
    url, schema = database
    clock = SharedClock(tmp_path / "clock")
    record = tmp_path / "runs.log"
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_SECRET_KEY": secrets.token_hex(32),
            "JOBGATE_ALLOW_PRIVATE_SHOP_URLS": "true",
            "JOBGATE_REDIS_URL": REDIS_URL,
            "JOBGATE_ADMISSION_REDIS_PREFIX": redis_prefix,
            # The load tenant is not what the rate limit test is about.
            "JOBGATE_RATE_LIMIT_JOBS": "1000000/minute",
            "JOBGATE_ADMISSION_RATE_LIMIT_BATCH": "1000000/minute",
            "JOBGATE_WRANGLER_CONFIG": str(_topology(tmp_path / "wrangler.jsonc")),
            "JOBGATE_TEST_CLOCK_FILE": str(clock.path),
            "JOBGATE_HANDLER_MODULES": "tests.support.recording_handlers",
            LOG_ENV: str(record),
            "JOBGATE_CONSUMER_HEARTBEAT_MS": str(HEARTBEAT_MS),
            "JOBGATE_CONSUMER_POLL_MIN_MS": "50",
            "JOBGATE_CONSUMER_POLL_MAX_MS": "250",
            # The console script does not put the working directory on sys.path.
            "PYTHONPATH": str(REPO_ROOT),
        },
    )
    load_tenant, limited, scheduled = await asyncio.gather(
        *(asyncio.to_thread(create_tenant, env, f"multi-{name}") for name in ("load", "rl", "cron"))
    )
    # The load sends email: a new tenant may send none until its policy allows it (at load rate).
    await asyncio.gather(
        *(
            asyncio.to_thread(
                run_jobgate,
                "email-policy",
                "set",
                t["tenant_id"],
                "--any",
                "--rate",
                "1000000/hour",
                env=env,
            )
            for t in (load_tenant, limited, scheduled)
        )
    )
    async with create_sessionmaker(db_engine)() as session:
        await set_plan(
            session,
            tenant_id=limited["tenant_id"],
            now=datetime.now(tz=UTC),
            rate_limits={RouteClass.jobs: f"{RATE_LIMIT} per {RATE_WINDOW_S} seconds"},
        )
        await session.commit()
    cluster = Cluster(
        gateways=[jobgate_server("serve", env=env) for _ in range(2)],
        consumers=[jobgate_process("consume", env=env) for _ in range(2)],
        clock=clock,
        engine=db_engine,
        record=record,
    )
    processes = [*cluster.gateways, *cluster.consumers]
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in processes))
        async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
            # A second past a minute: the schedules' first occurrence is the next step's.
            clock.to_next_minute()
            cluster.stepped_at = time.monotonic()
            created_ms = clock.now_ms()
            for name, job in SCHEDULES.items():
                response = await http.post(
                    cluster.gateways[0].url("/v1/schedules"),
                    json={"name": name, "cron": "* * * * *", "job": job},
                    headers=auth(scheduled["api_key"]),
                )
                assert response.status_code == 201, response.text
                cluster.schedule_ids.append(response.json()["id"])

            load, hits = Load(), list[Hit]()
            stop_ticking = asyncio.Event()
            # A failure anywhere cancels the rest (TaskGroup).
            async with asyncio.TaskGroup() as group:
                group.create_task(_ticker(cluster, stop_ticking))
                chaos = group.create_task(_kill_and_restart(cluster, load))
                async with asyncio.TaskGroup() as submissions:
                    for _ in range(SUBMITTERS):
                        submissions.create_task(
                            _submitter(http, cluster, load_tenant["api_key"], load)
                        )
                    for preferred in (0, 1):
                        submissions.create_task(
                            _hammer(http, cluster, limited["api_key"], preferred, hits)
                        )
                killed_pid = await chaos
                stop_ticking.set()
            assert not load.unexpected, f"{load.unexpected[:5]}\n{cluster.logs()}"
            while len(cluster.ticks) < MIN_TICKS:
                await cluster.tick()
            statuses = await _drain(cluster)
            ended_ms = clock.now_ms()
        assert all(p.running for p in processes), f"a process died\n{cluster.logs()}"
    finally:
        for process in processes:
            await asyncio.to_thread(process.close)

    async with db_engine.connect() as conn:
        jobs = (await conn.execute(select(_jobs.c.id, _jobs.c.tenant_id, _jobs.c.status))).all()
        attempts = (
            await conn.execute(
                select(_attempts.c.job_id, _attempts.c.attempt, _attempts.c.lease_expires_ms)
            )
        ).all()
        fires = (
            await conn.execute(
                select(_fires.c.schedule_id, _fires.c.scheduled_for, _fires.c.job_id)
            )
        ).all()
    status_of = {job_id: status for job_id, _, status in jobs}
    tenant_jobs: dict[str, set[str]] = defaultdict(set)
    for job_id, tenant_id, _ in jobs:
        tenant_jobs[tenant_id].add(job_id)

    # Every 202'd job, and every job that exists at all, succeeded and its handler ran.
    assert len(set(load.accepted)) == len(load.accepted), "a job id was answered twice"
    missing = set(load.accepted) - tenant_jobs[load_tenant["tenant_id"]]
    assert not missing, f"{len(missing)} accepted jobs do not exist: {sorted(missing)[:5]}"
    assert statuses == Counter({"succeeded": len(jobs)}), dict(statuses)
    runs = read_runs(record)
    ran = {run.job_id for run in runs.values() if run.end_ns is not None}
    not_run = set(status_of) - ran
    assert not not_run, f"{len(not_run)} succeeded jobs never ran: {sorted(not_run)[:5]}"

    # Never two runs of one job at once.
    killed_runs = [r for r in runs.values() if r.pid == killed_pid and r.end_ns is None]
    assert killed_runs, "no handler was running when consumer 0 was killed"
    lease_expires = {(job_id, attempt): lease for job_id, attempt, lease in attempts}
    overlaps = overlapping_runs(runs, lease_expires, killed={killed_pid})
    assert not overlaps, f"{len(overlaps)} overlapping runs:\n" + "\n".join(overlaps[:20])

    # Each schedule fired once for every minute the clock passed, and nothing else.
    minutes = [
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        for ms in range((created_ms // 60_000 + 1) * 60_000, ended_ms + 1, 60_000)
    ]
    assert len(minutes) >= MIN_TICKS
    fired: dict[str, list[datetime]] = defaultdict(list)
    for schedule_id, scheduled_for, _ in fires:
        fired[schedule_id].append(scheduled_for)
    for schedule_id in cluster.schedule_ids:
        assert sorted(fired[schedule_id]) == minutes, (schedule_id, fired[schedule_id], minutes)
    assert {job_id for *_, job_id in fires} == tenant_jobs[scheduled["tenant_id"]]
    assert len(fires) == len(cluster.schedule_ids) * len(minutes)

    # The shared rate limit: at most RATE_LIMIT jobs per window, whichever gateway took them.
    answered = [h for h in hits if h.status is not None]
    assert {h.status for h in answered} <= {202, 429}, Counter(h.status for h in answered)
    for index in (0, 1):
        codes = Counter(h.status for h in answered if h.gateway == index)
        assert codes[202] > 0, f"gateway {index}: {dict(codes)}"
        assert codes[429] > 0, f"gateway {index}: {dict(codes)}"
    span = max(h.answered for h in hits) - min(h.sent for h in hits)
    windows = int(span // RATE_WINDOW_S) + 1
    stored = len(tenant_jobs[limited["tenant_id"]])
    accepted_202 = sum(1 for h in answered if h.status == 202)
    assert RATE_LIMIT <= accepted_202 <= stored <= RATE_LIMIT * windows, (
        f"{stored} jobs stored ({accepted_202} answered 202) in {span:.1f} s: "
        f"at most {RATE_LIMIT} x {windows} windows of {RATE_WINDOW_S} s were allowed"
    )

    durations = [(r.end_ns - r.start_ns) / 1e6 for r in runs.values() if r.end_ns is not None]
    reruns = sum(n - 1 for n in Counter(r.job_id for r in runs.values()).values())
    print(
        f"\nmulti-instance: {len(load.accepted)} jobs accepted (202), {load.unanswered} cut off "
        f"by the gateway kill, {len(jobs)} jobs succeeded in all; {len(runs)} handler runs "
        f"({len(killed_runs)} killed mid-run, {reruns} runs again after a first one, "
        f"{len(attempts)} attempts, longest "
        f"{max(durations):.0f} ms); {len(minutes)} minute ticks x {len(cluster.schedule_ids)} "
        f"schedules fired once each; rate limit: {stored} of {len(hits)} requests accepted in "
        f"{span:.1f} s ({windows} windows of {RATE_LIMIT}/{RATE_WINDOW_S} s)"
    )
