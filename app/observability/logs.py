"""Logs: one JSON object per line (or plain text for a terminal), with the request's or the
job's context, and never a secret.

- `configure_logging(level, fmt)` installs one stderr handler on the root logger for the
  process; uvicorn's loggers (its access log included) propagate to it, so every line of a
  process has one shape. httpx/httpcore's per-request INFO lines are silenced.
- Context: `bind(...)` adds fields to the current request's context (the request id is set
  by `RequestContext`, the tenant id once the caller is authenticated); `job_context(...)`
  scopes fields to a block of consumer work. A formatter adds them to every record, and a
  record's own `extra=` fields win.
- Secrets: API keys (`jg_...`, `jgo_...`), bearer tokens, webhook signing secrets (`whsec_`)
  and `key=value` pairs with a secret-sounding name are masked in every message and field,
  and query strings in access lines are masked the same way. Headers are never logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.ids import random_hex

LogFormat = Literal["json", "text"]

# Fields a record may carry (through the context or `extra=`), in output order.
CONTEXT_FIELDS = (
    "request_id",
    "tenant_id",
    "job_id",
    "queue",
    "type",
    "attempt",
    "outcome",
    "reason",
    "method",
    "path",
    "status",
    "client",
)
# Free text that may quote anything; the other fields are ids, names and numbers we set.
FREE_TEXT_FIELDS = frozenset({"reason"})
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Loggers that log every outgoing HTTP request at INFO: off below WARNING.
QUIET_LOGGERS = ("httpx", "httpcore")
MASK = "[redacted]"

_SECRET_PATTERNS = (
    # API keys: tenant (jg_) and operator (jgo_) keys, whole.
    re.compile(r"\bjgo?_[A-Za-z0-9]{8}_[A-Za-z0-9_\-]+"),
    # Standard Webhooks signing secrets.
    re.compile(r"\bwhsec_[A-Za-z0-9+/=_\-]+"),
    # An Authorization header's value, wherever it is quoted.
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"),
    # name=value / "name": "value" pairs whose name says secret.
    re.compile(
        r"(?i)\b((?:api[_-]?key|token|secret|password|passwd|cookie|session|csrf[_-]?token|"
        r"authorization|signature)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}]+)"
    ),
)

_context: ContextVar[dict[str, Any] | None] = ContextVar("jobgate_log_context", default=None)


def redact(text: str) -> str:
    """`text` with anything that looks like a credential masked."""
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)} {MASK}", text)
        else:
            text = pattern.sub(MASK, text)
    return text


def bind(**fields: Any) -> None:
    """Add fields to the current request's (or job's) log context; None values are ignored.

    The context is a dict shared by everything the request runs, so a field bound in a
    dependency is seen by the access line written when the response starts.
    """
    current = _context.get()
    if current is None:
        current = {}
        _context.set(current)
    current.update({k: v for k, v in fields.items() if v is not None})


@contextmanager
def job_context(**fields: Any) -> Iterator[None]:
    """Fields for the records logged inside the block (a consumer's work on one job)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, Any]:
    return _context.get() or {}


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access record: args are (client, method, path, http version, status)."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, _version, status = args
    return {"client": client, "method": method, "path": redact(str(path)), "status": status}


def _fields(record: logging.LogRecord, access: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = dict(current_context())
    fields.update(access)
    for name in CONTEXT_FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            fields[name] = redact(value) if name in FREE_TEXT_FIELDS else value
    return {name: fields[name] for name in CONTEXT_FIELDS if name in fields}


def _message(record: logging.LogRecord, access: dict[str, Any]) -> str:
    if access:
        return f"{access['method']} {access['path']} {access['status']}"
    return redact(record.getMessage())


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        access = _access_fields(record)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record, access),
        }
        line.update(_fields(record, access))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        access = _access_fields(record)
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        parts = [stamp, f"{record.levelname:<7}", record.name, _message(record, access)]
        parts += [f"{k}={v}" for k, v in _fields(record, access).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


def configure_logging(level: str, fmt: LogFormat) -> None:
    """One stderr handler on the root logger, in `fmt`, at `level`, for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class RequestContext:
    """ASGI middleware: a request id per HTTP request (the caller's `X-Request-ID` when it
    is a sane token, else a new one), bound to the log context and echoed in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, token = open_request(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            close_request(token)


def open_request(scope: Scope) -> tuple[str, Token[dict[str, Any] | None]]:
    """A request's id (the caller's `X-Request-ID` when it is a sane token, else a new
    one), bound as its log context until `close_request`."""
    request_id = _incoming_request_id(scope) or random_hex(8)
    return request_id, _context.set({"request_id": request_id})


def close_request(token: Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None
