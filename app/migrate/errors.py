"""What stops `jobgate migrate bull` before it reads a job (the CLI prints the detail)."""

from __future__ import annotations

from app.core.errors import BadRequest


class MappingInvalid(BadRequest):
    """The mapping file cannot be read, or says something jobgate cannot do."""


class NoQueues(BadRequest):
    """Nothing to read: no queue under the prefix, or a named queue has no key."""
