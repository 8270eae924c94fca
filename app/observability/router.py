"""Health probes and the Prometheus endpoint."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.core.deps import EngineDep
from app.core.errors import ServiceUnavailable, problem_responses
from app.core.openapi import Tag

router = APIRouter(tags=[Tag.health])
# The included process answers from memory, on loopback.
INCLUDE_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
async def liveness() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=problem_responses(503))
async def readiness(engine: EngineDep) -> Health:
    """The job store answers: jobs can be accepted."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        raise ServiceUnavailable(
            "the job store is unavailable", headers={"Retry-After": "5"}
        ) from exc
    return Health(status="ready")


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    body = generate_latest()
    include = getattr(request.app.state, "metrics_include_url", None)
    if include:
        # `jobgate dev`: the consumer child's metrics (other families) follow the gateway's.
        body += await fetch_included(include)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def fetch_included(url: str) -> bytes:
    """Another process's exposition, or a comment saying why it is missing (never a 5xx:
    the gateway's own metrics must stay scrapable when the consumer is down)."""
    try:
        async with httpx.AsyncClient(timeout=INCLUDE_TIMEOUT_S) as http:
            response = await http.get(url)
            response.raise_for_status()
    except httpx.HTTPError as exc:
        return f"# consumer metrics unavailable: {type(exc).__name__}\n".encode()
    return response.content
