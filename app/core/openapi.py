"""OpenAPI conventions: stable operation ids and tag metadata."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute


class Tag(StrEnum):
    jobs = "jobs"
    webhooks = "webhooks"
    schedules = "schedules"
    admin = "admin"
    health = "health"


TAG_METADATA: list[dict[str, Any]] = [
    {"name": Tag.jobs, "description": "Submit typed jobs and follow their status."},
    {
        "name": Tag.webhooks,
        "description": "Event ingress: PrestaShop (Standard Webhooks) and R2 notifications.",
    },
    {
        "name": Tag.schedules,
        "description": "Cron schedules (UTC) that submit a job at every occurrence.",
    },
    {
        "name": Tag.admin,
        "description": "Tenants, API keys, webhook secrets, shops (admin scope or ADMIN_TOKEN).",
    },
    {"name": Tag.health, "description": "Liveness and readiness probes."},
]


def operation_id(route: APIRoute) -> str:
    """`{tag}-{function_name}`: readable and stable, so generated clients stay stable."""
    return f"{route.tags[0]}-{route.name}"


def openapi_yaml(app: FastAPI) -> str:
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)


def _problem_content(document: dict[str, Any]) -> dict[str, Any]:
    """Declare every error response as application/problem+json with the Problem schema.

    FastAPI files `responses=` models under application/json and adds its own 422 shape;
    our handlers answer every error as problem+json, so the document says exactly that.
    """
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    ref = {"$ref": "#/components/schemas/Problem"}
                    response["content"] = {"application/problem+json": {"schema": ref}}
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_content(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                )
            )
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
