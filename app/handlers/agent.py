"""`agent-task`: run an AI agent through the configured executor endpoint.

The executor gets `POST {agent_executor_url}` with `{"tenant_id", "agent_type", "dry_run",
"job_id"}` and `Idempotency-Key: <job id>` (a redelivered job repeats the same key, so the
executor can refuse to run an agent twice). A 2xx answer completes the job. 429, or 503
with `Retry-After`, waits as told (`RetryLater`); other 5xx, timeouts and connection errors
raise `DownstreamError`, which the runtime retries and its per-(tenant, type) circuit
breaker counts; other 4xx answers fail permanently.
"""

from __future__ import annotations

import logging

import httpx

from app.consumer.registry import JobContext, PermanentFailure, handler
from app.handlers._http import DownstreamError, raise_for_downstream
from app.jobs.payloads import AgentTaskPayload

logger = logging.getLogger(__name__)


@handler("agent-task", AgentTaskPayload, timeout_seconds=900)
async def run_agent(ctx: JobContext[AgentTaskPayload]) -> None:
    """Ask the executor to run `agentType` for the tenant (optionally as a dry run)."""
    settings = ctx.resources.settings
    if not settings.agent.executor_url:
        raise PermanentFailure("JOBGATE_AGENT_EXECUTOR_URL is not set")
    body = {
        "tenant_id": ctx.tenant_id,
        "agent_type": ctx.payload.agentType,
        "dry_run": ctx.payload.dryRun,
        "job_id": ctx.job_id,
    }
    await ctx.progress(1, "sent to the agent executor")
    try:
        response = await ctx.resources.http.post(
            settings.agent.executor_url,
            json=body,
            headers={"Idempotency-Key": ctx.job_id},
            timeout=settings.agent.timeout_seconds,
        )
    except httpx.TimeoutException as exc:
        raise DownstreamError("the agent executor timed out") from exc
    except httpx.TransportError as exc:
        raise DownstreamError(f"the agent executor is unreachable: {type(exc).__name__}") from exc
    raise_for_downstream(response, service="agent executor", now_ms=ctx.resources.clock.now_ms())
    logger.info("agent %s finished for job %s", body["agent_type"], ctx.job_id)
    await ctx.progress(100, "agent finished")
