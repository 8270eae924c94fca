"""`agent-task` against a scripted executor over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.consumer.registry import PermanentFailure, RetryLater
from app.handlers._http import DownstreamError
from app.settings import Settings
from tests.handlers.conftest import MakeRun
from tests.handlers.endpoint import Reply, ScriptedEndpoint
from tests.support.fake_prestashop import ThreadedServer, free_port

pytestmark = pytest.mark.asyncio


@pytest.fixture
def executor() -> Iterator[tuple[ScriptedEndpoint, ThreadedServer]]:
    endpoint = ScriptedEndpoint(default=Reply(200, {"status": "done"}))
    with ThreadedServer(endpoint.app) as server:
        yield endpoint, server


@pytest.fixture
def agent_settings(
    handler_settings: Settings, executor: tuple[ScriptedEndpoint, ThreadedServer]
) -> Settings:
    return handler_settings.updated(
        agent={"executor_url": executor[1].base_url + "/", "timeout_seconds": 5.0}
    )


PAYLOAD = {"agentType": "content-management", "dryRun": True}


async def test_runs_the_agent_with_an_idempotency_key(
    executor: tuple[ScriptedEndpoint, ThreadedServer],
    agent_settings: Settings,
    tenant_id: str,
    make_run: MakeRun,
) -> None:
    endpoint, _ = executor
    run = make_run("agent-task", PAYLOAD, tenant_id=tenant_id, settings=agent_settings)
    await run()
    headers, body = endpoint.requests[0]
    assert headers["idempotency-key"] == run.ctx.job_id
    assert body == {
        "tenant_id": tenant_id,
        "agent_type": "content-management",
        "dry_run": True,
        "job_id": run.ctx.job_id,
    }
    assert run.progress.percents == [1, 100]


@pytest.mark.parametrize(
    ("reply", "expected", "delay"),
    [
        (Reply(503, {"error": "overloaded"}, {"Retry-After": "120"}), RetryLater, 120),
        (Reply(429, {"error": "slow down"}, {"Retry-After": "5"}), RetryLater, 5),
        (Reply(502, "bad gateway"), DownstreamError, None),
        (Reply(503, "down"), DownstreamError, None),
        (Reply(404, {"error": "unknown agent"}), PermanentFailure, None),
    ],
)
async def test_executor_answers_map_to_retry_decisions(
    executor: tuple[ScriptedEndpoint, ThreadedServer],
    agent_settings: Settings,
    tenant_id: str,
    make_run: MakeRun,
    reply: Reply,
    expected: type[Exception],
    delay: int | None,
) -> None:
    executor[0].replies.append(reply)
    with pytest.raises(expected) as caught:
        await make_run("agent-task", PAYLOAD, tenant_id=tenant_id, settings=agent_settings)()
    if delay is not None:
        assert isinstance(caught.value, RetryLater)
        assert caught.value.delay_seconds == delay


async def test_unreachable_executor_is_transient(
    handler_settings: Settings, tenant_id: str, make_run: MakeRun
) -> None:
    settings = handler_settings.updated(agent={"executor_url": f"http://127.0.0.1:{free_port()}/"})
    with pytest.raises(DownstreamError, match="unreachable"):
        await make_run("agent-task", PAYLOAD, tenant_id=tenant_id, settings=settings)()


async def test_unconfigured_executor_fails_permanently(tenant_id: str, make_run: MakeRun) -> None:
    with pytest.raises(PermanentFailure, match="AGENT_EXECUTOR_URL"):
        await make_run("agent-task", PAYLOAD, tenant_id=tenant_id)()
