"""A real gateway (`jobgate serve` on loopback) for the client tests, with two tenants and a
tiny submission rate limit so that a burst meets 429 answers the clients must retry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.servers import create_tenant, jobgate_env, jobgate_server

# Submissions per tenant per second: a burst of 8 is refused in part, and the refused ones
# are admitted again after the gateway's Retry-After (1 s).
SUBMIT_RATE = "2/second"


@dataclass(frozen=True)
class LiveGateway:
    url: str
    key: str
    other_key: str  # another tenant's: its jobs are not ours


@pytest.fixture
def live_gateway(database: tuple[str, str | None], db_engine: object) -> Iterator[LiveGateway]:
    url, schema = database
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_RATE_LIMIT_JOBS": SUBMIT_RATE,
            "JOBGATE_RATE_LIMIT_BATCH": SUBMIT_RATE,
        },
    )
    tenant = create_tenant(env, "client-tests")
    other = create_tenant(env, "client-tests-other")
    with jobgate_server("serve", env=env) as gateway:
        yield LiveGateway(gateway.base_url, tenant["api_key"], other["api_key"])
