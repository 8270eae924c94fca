"""How the dashboard answers: HTML templates, security headers, and errors a browser reads.

A browser (it asks for `text/html` and sends no `Authorization` header) without a session
is sent to the login page and sees errors as a page; scripts get the API's problem+json.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app.core.errors import AppError
from app.dashboard.deps import LoginRequired, Viewer

LOGIN_PATH = "/dashboard/login"
HOME_PATH = "/dashboard"
# Only this process's own assets and forms; no framing by other sites.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _age(seconds: float | int | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} d"


def _ms_when(value: int | None) -> str:
    if not value:
        return "-"
    return _when(datetime.fromtimestamp(value / 1000, tz=UTC))


templates.env.filters["when"] = _when
templates.env.filters["age"] = _age
templates.env.filters["ms_when"] = _ms_when


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and not request.headers.get("authorization")


def safe_next(target: str | None) -> str:
    """A post-login destination inside the dashboard only (no open redirect)."""
    if (
        target
        and target.startswith(HOME_PATH)
        and not target.startswith("//")
        and "\\" not in target
        and all(32 < ord(ch) < 127 for ch in target)
    ):
        return target
    return HOME_PATH


def render(
    request: Request,
    name: str,
    viewer: Viewer | None,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> Response:
    return templates.TemplateResponse(
        request,
        name,
        {"viewer": viewer, **(context or {})},
        status_code=status_code,
    )


def back_to(path: str) -> RedirectResponse:
    """After a form: see the result with a GET (303), so a reload never resubmits."""
    return RedirectResponse(path, status_code=303)


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DashboardRoute(APIRoute):
    """Every dashboard route: security headers; for browsers, login redirects and error
    pages instead of problem+json."""

    def get_route_handler(self) -> Endpoint:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                if not wants_html(request):
                    raise
                target = request.url.path
                if request.method == "GET" and request.url.query:
                    target += "?" + request.url.query
                response = back_to(f"{LOGIN_PATH}?next={quote(safe_next(target), safe='/')}")
            except AppError as exc:
                if not wants_html(request):
                    raise
                response = render(
                    request,
                    "error.html",
                    None,
                    {"status": exc.status, "title": exc.title, "detail": exc.detail},
                    status_code=exc.status,
                )
                response.headers.update(exc.headers)
            response.headers.update(SECURITY_HEADERS)
            return response

        return route
