"""What stops `jobgate migrate bull` before it reads a job (the CLI prints the detail)."""

from __future__ import annotations

from app.core.errors import BadRequest


class MappingInvalid(BadRequest):
    """The mapping file cannot be read, or says something jobgate cannot do."""


class RedisUnreachable(BadRequest):
    """No answer from `--redis-url`."""
