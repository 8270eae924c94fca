"""Health probes and the Prometheus endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.core.deps import EngineDep
from app.core.errors import ServiceUnavailable, problem_responses
from app.core.openapi import Tag

router = APIRouter(tags=[Tag.health])


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
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
