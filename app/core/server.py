"""How `jobgate serve` and `jobgate dev` run HTTP: uvicorn with httptools, with bounds.

uvicorn's httptools protocol has no limit on the size of a request head (httptools
concatenates a header that arrives in pieces, so one 100 MB header costs seconds of CPU and
its size in memory) and no deadline for it (a connection that sends one byte a minute is
kept forever). `BoundedHttpToolsProtocol` adds both, plus a cap on open connections, and
keeps httptools' speed (h11 bounds the head size but is pure Python and much slower):

- the bytes of a request head (request line + headers) are counted as they arrive, and the
  head's parsed parts as the parser hands them over; over `max_header_bytes` either way the
  server answers 431 and closes, so a connection never holds more than that plus one read,
  and a complete oversized head that arrives in one read is refused too;
- a head must be complete within `header_timeout` of the connection opening (or of the first
  byte of a later request on a kept-alive connection), else 408 and close;
- idle kept-alive connections close after `keep_alive` (uvicorn's own timer);
- a connection beyond `max_connections` open ones is answered 503 and closed at once.
  A request is handled in one task per connection, so this also bounds concurrent requests.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.config import HttpSettings
from app.core.errors import PROBLEM_JSON, TYPE_BASE, Problem
from app.core.heap import settle_heap

logger = logging.getLogger(__name__)
# File descriptors beyond the connections: database, Redis, logs, the listening socket.
FD_HEADROOM = 256


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int
    header_timeout: float
    keep_alive: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> ServerLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout_seconds,
            keep_alive=settings.keep_alive_seconds,
            max_connections=settings.max_connections,
        )


_REASONS = {
    408: ("Request Timeout", "request-timeout"),
    431: ("Request Header Fields Too Large", "header-too-large"),
    503: ("Service Unavailable", "too-many-connections"),
}


def _closing_response(status: int, detail: str) -> bytes:
    """A complete problem+json response that ends the connection (no app involved)."""
    title, slug = _REASONS[status]
    body = Problem(
        type=f"{TYPE_BASE}{slug}", title=title, status=status, detail=detail
    ).model_dump_json(exclude_none=True)
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body.encode()


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools turns it into a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head and connection count."""

    limits: ClassVar[ServerLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._parsed_head_bytes = 0
        self._head_too_large = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            logger.warning("connection refused: %d open", len(self.connections) - 1)
            self._close_with(503, "too many open connections; retry later")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: a chunk that completes a small head may carry a large body.
        if (
            self._in_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._close_with(431, self._too_large_detail())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._parsed_head_bytes = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count_parsed(self, size: int) -> None:
        # A whole head can arrive in one read and be parsed before `data_received` checks
        # the count: refuse it from inside the parser.
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > self.limits.max_header_bytes:
            self._head_too_large = True
            raise _HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any parser error with 400; ours is a head over the limit.
        if self._head_too_large:
            self._close_with(431, self._too_large_detail())
        else:
            super().send_400_response(msg)

    def _too_large_detail(self) -> str:
        return f"the request line and headers are limited to {self.limits.max_header_bytes} bytes"

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a request still being answered: wait for that one.
            self._arm_head_timer()
            return
        if self._in_head and not self.transport.is_closing():
            self._close_with(
                408, f"the request head did not arrive within {self.limits.header_timeout:g} s"
            )

    def _close_with(self, status: int, detail: str) -> None:
        self._cancel_head_timer()
        self.transport.write(_closing_response(status, detail))
        self.transport.close()


def bounded_protocol(limits: ServerLimits) -> type[BoundedHttpToolsProtocol]:
    """A protocol class bound to `limits` (uvicorn instantiates it per connection)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit towards `wanted` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def run(
    app: str, settings: HttpSettings, *, host: str | None = None, port: int | None = None
) -> None:
    """Serve the ASGI app factory `app` ("module:function") with the configured limits
    (on `JOBGATE_HOST`/`JOBGATE_PORT` unless given)."""
    limits = ServerLimits.from_settings(settings)
    # The app's modules, imported now so that they are frozen with the rest of startup.
    importlib.import_module(app.partition(":")[0])
    settle_heap()
    fds = raise_fd_limit(limits.max_connections + FD_HEADROOM)
    if fds != resource.RLIM_INFINITY and fds < limits.max_connections + FD_HEADROOM:
        logger.warning(
            "open-files limit %d is below JOBGATE_HTTP_MAX_CONNECTIONS=%d plus headroom: "
            "raise `ulimit -n` or lower the setting",
            fds,
            limits.max_connections,
        )
    uvicorn.run(
        app,
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        # The caller configured logging (JSON or text, one handler); uvicorn's loggers,
        # its access log included, propagate to it.
        log_config=None,
        access_log=True,
        http=bounded_protocol(limits),
        timeout_keep_alive=limits.keep_alive,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
