"""OpenAPI conventions: stable operation ids and tag metadata."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel


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


def _add_schemas(document: dict[str, Any], models: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """Put models that routes reference by hand (`openapi_extra` bodies read raw, to verify
    a signature first) into `components.schemas`, so every `$ref` resolves."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return document


def install_openapi(app: FastAPI, *, schemas: Sequence[type[BaseModel]] = ()) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = _problem_content(_add_schemas(document, schemas))
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
