"""Crash safety: every job answered 202 survives a SIGKILL of the gateway under load.

A real `jobgate serve` subprocess on the test database (a SQLite file with
`synchronous=FULL`, or the run's PostgreSQL schema) takes concurrent submissions and is
SIGKILLed mid-load. A new gateway on the same database must then show every 202'd job as
`queued`, and the database must hold exactly one queue message per job of the tenant
(job row and message are written in one transaction, acknowledged or not).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import select

from app.core.config import DatabaseSettings
from app.core.db import create_engine
from app.jobs.models import Job
from app.queues.local import decode_body
from app.queues.models import QueueMessage
from tests.support.servers import ServerProcess, create_tenant, jobgate_env, jobgate_server

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SUBMITTERS = 12
# Kill once this many jobs were accepted and the load ran this long (or at the deadline).
KILL_AFTER_ACCEPTED = 150
KILL_AFTER_S = 1.5
KILL_DEADLINE_S = 15.0
ORDER = {"type": "sync-single-order", "orderId": 42}


@dataclass
class Load:
    accepted: list[str] = field(default_factory=list)
    lost_in_flight: int = 0  # transport errors after the kill: not promised
    unexpected: list[str] = field(default_factory=list)  # anything else is a failure
    killed: asyncio.Event = field(default_factory=asyncio.Event)


async def _submit_until_killed(http: httpx.AsyncClient, key: str, load: Load) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while True:
        try:
            response = await http.post("/v1/jobs", json=ORDER, headers=headers)
        except httpx.TransportError as exc:
            if load.killed.is_set():
                load.lost_in_flight += 1
            else:
                load.unexpected.append(f"before the kill: {exc!r}")
            return
        if response.status_code != 202:
            load.unexpected.append(f"HTTP {response.status_code}: {response.text[:300]}")
            return
        load.accepted.append(response.json()["id"])


async def _load_and_kill(server: ServerProcess, key: str) -> Load:
    load = Load()
    limits = httpx.Limits(max_connections=SUBMITTERS, max_keepalive_connections=SUBMITTERS)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0, limits=limits) as http:
        tasks = [
            asyncio.create_task(_submit_until_killed(http, key, load)) for _ in range(SUBMITTERS)
        ]
        started = time.monotonic()
        while time.monotonic() - started < KILL_DEADLINE_S:
            elapsed = time.monotonic() - started
            if load.unexpected or all(task.done() for task in tasks):
                break
            if len(load.accepted) >= KILL_AFTER_ACCEPTED and elapsed >= KILL_AFTER_S:
                break
            await asyncio.sleep(0.05)
        load.killed.set()  # before the signal, so every later error counts as "in flight"
        server.kill()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    return load


async def _read_jobs(
    http: httpx.AsyncClient, key: str, job_ids: list[str]
) -> dict[str, httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"}
    gate = asyncio.Semaphore(8)

    async def read(job_id: str) -> tuple[str, httpx.Response]:
        async with gate:
            return job_id, await http.get(f"/v1/jobs/{job_id}", headers=headers)

    return dict(await asyncio.gather(*(read(job_id) for job_id in job_ids)))


async def _stored(
    database: tuple[str, str | None], tenant_id: str
) -> tuple[dict[str, str], Counter[str]]:
    """(job id → status, job id → queue messages) of one tenant, read from the database."""
    url, schema = database
    engine = create_engine(DatabaseSettings(url=url), search_path=schema)
    try:
        job, message = Job.__table__, QueueMessage.__table__  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            query = select(job.c.id, job.c.status).where(job.c.tenant_id == tenant_id)
            jobs = (await conn.execute(query)).all()
            rows = (await conn.execute(select(message.c.body, message.c.content_type))).all()
    finally:
        await engine.dispose()
    messages: Counter[str] = Counter()
    for body, content_type in rows:
        envelope = decode_body(body, content_type)
        if isinstance(envelope, dict) and envelope.get("tenant_id") == tenant_id:
            messages[envelope["job_id"]] += 1
    return {str(job_id): str(status) for job_id, status in jobs}, messages


async def test_every_accepted_job_survives_sigkill(database: tuple[str, str | None]) -> None:
    url, schema = database
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_SQLITE_SYNCHRONOUS": "FULL",
            # The crash test measures durability, not admission control.
            "JOBGATE_RATE_LIMIT_JOBS": "1000000/minute",
        },
    )
    tenant = await asyncio.to_thread(create_tenant, env, f"crash-{secrets.token_hex(4)}")
    key = tenant["api_key"]

    with jobgate_server("serve", env=env) as first:
        load = await _load_and_kill(first, key)
        first_output = first.output()
    assert not load.unexpected, f"{load.unexpected[:5]}\n{first_output}"
    assert load.accepted, f"no job was accepted before the kill\n{first_output}"
    assert len(set(load.accepted)) == len(load.accepted), "a job id was answered twice"

    with jobgate_server("serve", env=env) as second:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=30.0) as http:
            answers = await _read_jobs(http, key, load.accepted)
    missing = [job_id for job_id, r in answers.items() if r.status_code != 200]
    assert not missing, f"{len(missing)} accepted jobs are gone after restart: {missing[:5]}"
    not_queued = {
        job_id: status
        for job_id, r in answers.items()
        if (status := r.json()["status"]) != "queued"
    }
    assert not not_queued, f"accepted jobs not queued after restart: {list(not_queued.items())[:5]}"

    statuses, messages = await _stored(database, tenant["tenant_id"])
    assert set(load.accepted) <= statuses.keys()
    # Jobs committed whose 202 was lost with the process are fine, but they too must be
    # complete: one job row, one message, nothing half-written either way.
    wrong = {
        job_id: messages[job_id]
        for job_id in statuses.keys() | messages.keys()
        if messages[job_id] != 1 or job_id not in statuses
    }
    assert not wrong, f"jobs without exactly one queue message: {list(wrong.items())[:5]}"
    assert set(statuses.values()) == {"queued"}

    print(
        f"\ncrash test: accepted (202) {len(load.accepted)}, lost in flight at the kill "
        f"{load.lost_in_flight}, committed without a 202 "
        f"{len(statuses) - len(load.accepted)}, verified after restart {len(answers)} "
        f"(API) / {len(statuses)} jobs with one message each (database)"
    )
