"""No-op handlers for every job type that record when each run starts and ends.

A consumer subprocess loads them with `JOBGATE_HANDLER_MODULES=tests.support.recording_handlers`
(and the repository root on PYTHONPATH); `tests/test_multi_instance.py` reads the record to
prove that no job ever had two runs at once, across consumers and crashes.

Each run appends one line when it starts and one when it ends to the file named by
`JOBGATE_TEST_HANDLER_LOG`, with a single `write()` on a descriptor opened `O_APPEND`, so
lines of several processes never interleave and a SIGKILL loses none that was written:

    start <run> <job_id> <attempt> <pid> <monotonic_ns> <clock_ms> <planned_ms>
    end   <run> <job_id> <attempt> <pid> <monotonic_ns> <clock_ms> <planned_ms>

`monotonic_ns` is CLOCK_MONOTONIC, one clock for every process on the machine (Linux), so
runs of different consumers compare; `clock_ms` is the consumer's jobgate clock (the test
clock file), the time base of leases. A run sleeps `sleep_ms` when the payload names one
(`properties` of an analytics event, `variables` of an email), else 0-20 ms picked from the
job id, so runs have a duration a second, concurrent run could overlap. `read_runs` and
`overlapping_runs` read the record back in the test process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from app.consumer.registry import HandlerRegistry, JobContext
from app.jobs.payloads import JOB_PAYLOADS, AnalyticsEventPayload, SendEmailPayload

LOG_ENV = "JOBGATE_TEST_HANDLER_LOG"
_fd: int | None = None


def _write(line: str) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, line.encode("ascii"))


def _planned_ms(ctx: JobContext[BaseModel]) -> int:
    payload = ctx.payload
    value: object = None
    if isinstance(payload, AnalyticsEventPayload):
        value = payload.properties.get("sleep_ms")
    elif isinstance(payload, SendEmailPayload):
        value = payload.variables.get("sleep_ms")
    if isinstance(value, int):
        return value
    return hashlib.sha256(ctx.job_id.encode()).digest()[0] % 21


def _record(event: str, run: str, ctx: JobContext[BaseModel], planned_ms: int) -> None:
    fields = (
        event,
        run,
        ctx.job_id,
        ctx.attempt,
        os.getpid(),
        time.monotonic_ns(),
        ctx.resources.clock.now_ms(),
        planned_ms,
    )
    _write(" ".join(str(field) for field in fields) + "\n")


async def record_run(ctx: JobContext[BaseModel]) -> None:
    run = uuid.uuid4().hex
    planned_ms = _planned_ms(ctx)
    _record("start", run, ctx, planned_ms)
    await asyncio.sleep(planned_ms / 1000)
    _record("end", run, ctx, planned_ms)


def register(registry: HandlerRegistry) -> None:
    for job_type, model in sorted(JOB_PAYLOADS.items()):
        registry.handler(job_type, model)(record_run)


# -- reading the record (the test process) --------------------------------------------------


@dataclass
class Run:
    """One handler run, as `recording_handlers` wrote it."""

    job_id: str
    attempt: int
    pid: int
    start_ns: int
    start_clock_ms: int
    planned_ms: int
    end_ns: int | None = None


def read_runs(path: Path) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    if not path.exists():
        return runs
    for line in path.read_text(encoding="ascii").splitlines():
        event, run, job_id, attempt, pid, mono_ns, clock_ms, planned_ms = line.split()
        if event == "start":
            runs[run] = Run(
                job_id, int(attempt), int(pid), int(mono_ns), int(clock_ms), int(planned_ms)
            )
        else:
            runs[run].end_ns = int(mono_ns)
    return runs


def overlapping_runs(
    runs: Mapping[str, Run], lease_expires_ms: Mapping[tuple[str, int], int], killed: set[int]
) -> list[str]:
    """Pairs of runs of one job that ran at the same time, described.

    A run that ended occupies [start, end] (monotonic clock). A run that never ended because
    its consumer was SIGKILLed occupies its job from its start until its attempt's lease
    expired (jobgate clock): any later run must start after that. A run that never ended in
    a consumer that was not killed occupies its job for good.
    """
    by_job: dict[str, list[Run]] = defaultdict(list)
    for run in runs.values():
        by_job[run.job_id].append(run)
    problems: list[str] = []
    for job_id, job_runs in by_job.items():
        job_runs.sort(key=lambda r: r.start_ns)
        for i, first in enumerate(job_runs):
            for later in job_runs[i + 1 :]:
                if first.end_ns is not None:
                    if later.start_ns < first.end_ns:
                        problems.append(
                            f"job {job_id}: attempt {later.attempt} (pid {later.pid}) started "
                            f"{(first.end_ns - later.start_ns) / 1e6:.1f} ms before attempt "
                            f"{first.attempt} (pid {first.pid}) ended"
                        )
                    continue
                lease = lease_expires_ms.get((job_id, first.attempt))
                if first.pid not in killed or lease is None:
                    problems.append(
                        f"job {job_id}: attempt {later.attempt} (pid {later.pid}) started while "
                        f"attempt {first.attempt} (pid {first.pid}) never ended"
                    )
                elif later.start_clock_ms < lease:
                    problems.append(
                        f"job {job_id}: attempt {later.attempt} (pid {later.pid}) started "
                        f"{lease - later.start_clock_ms} ms before the lease of killed attempt "
                        f"{first.attempt} (pid {first.pid}) expired"
                    )
    return problems
