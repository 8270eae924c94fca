"""A tiny scriptable JSON endpoint (alt-text service, agent executor) for real-HTTP tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ScriptedEndpoint:
    """Answers POST / with queued replies (then `default`), recording every request."""

    default: Reply = field(default_factory=lambda: Reply(200, {"ok": True}))
    replies: list[Reply] = field(default_factory=list)
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.json()))
        reply = self.replies.pop(0) if self.replies else self.default
        if isinstance(reply.body, str | bytes):
            return Response(reply.body, status_code=reply.status, headers=reply.headers)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
