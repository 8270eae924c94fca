"""OpenAPI conventions: stable operation ids, tag metadata, security and response headers.

Security and rate-limit headers are derived from each route's dependencies (the callables
`install_openapi` is given), never listed by hand, so a new route is documented as it runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
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


DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
BEARER = "bearer"
SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "A tenant's API key (`jg_...`), an operator key (`jgo_...` or `ADMIN_TOKEN`), "
            "or a JWT issued by your backend (verified against the configured JWKS)."
        ),
    }
}
_INTEGER = {"type": "integer", "minimum": 0}
RETRY_AFTER = {"description": "Seconds to wait before trying again.", "schema": _INTEGER}
WWW_AUTHENTICATE = {
    "description": "The scheme to authenticate with (`Bearer`, or the webhook signature).",
    "schema": {"type": "string"},
}
RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Limit": {"description": "Requests allowed in the window.", "schema": _INTEGER},
    "RateLimit-Remaining": {"description": "Requests left in the window.", "schema": _INTEGER},
    "RateLimit-Reset": {"description": "Seconds until the window resets.", "schema": _INTEGER},
    "RateLimit-Policy": {
        "description": "Every budget that applies (IETF draft syntax).",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": "What is left of every budget (IETF draft syntax).",
        "schema": {"type": "string"},
    },
}
# Marks a dependency: the callable itself or, for a class, any of its instances.
Marker = Any


def _dependency_calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


def depends_on(route: Any, markers: Sequence[Marker]) -> bool:
    """Whether any dependency of the route, however deep, is one of `markers`."""
    classes = tuple(marker for marker in markers if isinstance(marker, type))
    return any(
        any(call is marker for marker in markers) or isinstance(call, classes)
        for call in _dependency_calls(route.dependant)
    )


def _problem(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": ref}}}


def _document_routes(
    document: dict[str, Any],
    routes: Sequence[Any],
    *,
    authenticators: Sequence[Marker],
    rate_limiters: Sequence[Marker],
    throttled_prefix: str,
) -> dict[str, Any]:
    """Security and response headers of each operation, from its route's dependencies."""
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    paths = document.get("paths", {})
    # Route contexts: each route as included, with its routers' prefixes and dependencies.
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        path = route.path_format or ""
        for method in sorted(route.methods or ()):
            operation = paths.get(path, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            if depends_on(route, authenticators):
                operation["security"] = [{BEARER: []}]
                responses.setdefault("401", _problem("Unauthorized"))
            if "requestBody" in operation:
                # Any body can be malformed JSON (400) or over the size limit (413).
                responses.setdefault("400", _problem("Bad Request"))
                responses.setdefault("413", _problem("Content Too Large"))
            # The failed-authentication throttle answers 429 on every path under it.
            if path.startswith(throttled_prefix):
                responses.setdefault("429", _problem("Too Many Requests"))
            limited = depends_on(route, rate_limiters)
            for status, response in responses.items():
                headers: dict[str, Any] = {}
                if status in ("429", "503"):
                    headers["Retry-After"] = RETRY_AFTER
                elif status == "401":
                    headers["WWW-Authenticate"] = {**WWW_AUTHENTICATE, "required": True}
                elif status.startswith("2") and limited:
                    headers.update(RATE_LIMIT_HEADERS)
                if headers:
                    response["headers"] = {**response.get("headers", {}), **headers}
    return document


def install_openapi(
    app: FastAPI,
    *,
    schemas: Sequence[type[BaseModel]] = (),
    authenticators: Sequence[Marker] = (),
    rate_limiters: Sequence[Marker] = (),
    throttled_prefix: str = "/v1/",
    server_url: str = DEFAULT_SERVER_URL,
) -> None:
    """Build the document once: `authenticators` are the dependencies that require a bearer
    credential, `rate_limiters` those that set the rate-limit headers on a response."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=[{"url": server_url}],
            )
            document = _document_routes(
                _add_schemas(document, schemas),
                app.routes,
                authenticators=authenticators,
                rate_limiters=rate_limiters,
                throttled_prefix=throttled_prefix,
            )
            app.openapi_schema = _problem_content(document)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
