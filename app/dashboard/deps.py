"""Who is looking at the dashboard, and the checks every state-changing form passes.

Two ways in: `Authorization: Bearer <credential>` (scripts, tests; no cookie, so no CSRF
risk) or the session cookie set by the login page (then every POST carries the session's
CSRF token). Either way the credential must be the operator's or a tenant's `admin` key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request

from app.core.db import SessionMaker
from app.core.deps import ClockDep, component
from app.core.errors import BadRequest, Forbidden, Unauthorized, UnsupportedMediaType
from app.dashboard.sessions import SESSION_COOKIE, SessionCodec
from app.tenants.deps import CredentialsDep, authenticate, authenticate_token
from app.tenants.schemas import Principal, Scope

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 2_000
_FORM_SCOPE_KEY = "jobgate.dashboard_form"

SessionCodecDep = Annotated[SessionCodec, Depends(component("dashboard_sessions"))]


class LoginRequired(Unauthorized):
    """No valid credential: a browser is sent to the login page, a script gets 401."""


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    # The token forms must send back; None when the credential came in a header.
    csrf_token: str | None = None
    nonce: str | None = None

    @property
    def operator(self) -> bool:
        return self.principal.operator

    @property
    def tenant_id(self) -> str | None:
        """The only tenant this viewer may see; None for the operator (every tenant)."""
        return None if self.principal.operator else self.principal.tenant_id


def check_role(principal: Principal) -> None:
    if not principal.operator and Scope.admin.value not in principal.scopes:
        raise Forbidden("the dashboard needs an operator credential or a tenant's admin key")


async def current_viewer(
    request: Request,
    credentials: CredentialsDep,
    codec: SessionCodecDep,
    clock: ClockDep,
) -> Viewer:
    if request.headers.get("authorization"):
        principal = await authenticate(request, credentials)
        check_role(principal)
        return Viewer(principal)
    cookie = request.cookies.get(SESSION_COOKIE)
    opened = codec.open(cookie, now_s=clock.now_ms() // 1000) if cookie else None
    if opened is None:
        raise LoginRequired("log in at /dashboard/login, or send Authorization: Bearer <key>")
    reader: SessionMaker = request.app.state.reader  # a lookup: no write lock on SQLite
    try:
        async with reader() as session:
            principal = await authenticate_token(opened.credential, session, credentials)
    except Unauthorized:
        raise LoginRequired("the session's credential is no longer valid: log in again") from None
    check_role(principal)
    return Viewer(principal, csrf_token=codec.csrf_token(opened.nonce), nonce=opened.nonce)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


async def require_operator_viewer(viewer: ViewerDep) -> Viewer:
    if not viewer.operator:
        raise Forbidden("only the operator may do this; a tenant's admin sees its own jobs")
    return viewer


OperatorViewer = Annotated[Viewer, Depends(require_operator_viewer)]


class Form:
    """A urlencoded form body, parsed once per request."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str) -> str | None:
        values = self._fields.get(name)
        return values[0] if values else None

    def getall(self, name: str) -> list[str]:
        return list(self._fields.get(name, []))


async def read_form(request: Request) -> Form:
    # Kept on this request's own scope (`request.state` may be shared with the lifespan).
    cached = request.scope.get(_FORM_SCOPE_KEY)
    if isinstance(cached, Form):
        return cached
    body = await request.body()
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body and media_type != FORM_MEDIA_TYPE:
        raise UnsupportedMediaType(f"send the form as {FORM_MEDIA_TYPE}")
    try:
        text = body.decode("utf-8")
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form is not valid urlencoded UTF-8") from None
    if any("\x00" in value for values in fields.values() for value in values):
        raise BadRequest("the form holds a NUL character")
    form = Form(fields)
    request.scope[_FORM_SCOPE_KEY] = form
    return form


async def checked_form(request: Request, viewer: ViewerDep, codec: SessionCodecDep) -> Form:
    """The form of a state-changing request, its CSRF token verified (cookie sessions)."""
    form = await read_form(request)
    if viewer.nonce is not None and not codec.csrf_valid(viewer.nonce, form.get("csrf")):
        raise Forbidden("missing or invalid CSRF token: reload the page and try again")
    return form


FormDep = Annotated[Form, Depends(checked_form)]
