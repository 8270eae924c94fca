"""Compact JSON text for message bodies and JSON columns, encoded by pydantic-core.

pydantic-core's encoder (Rust) writes a job envelope about five times faster than the
stdlib's C encoder, and the accept path encodes each job twice (its message body and its
`payload` column). The text holds the same values as `json.dumps` with compact separators
and `ensure_ascii=False`; only float spellings may differ (`1e-7`, not `1e-07`). What
pydantic-core refuses (a lone surrogate, an unknown type) goes to the stdlib encoder, which
decides as before; so does any text that may hold NaN or Infinity when they are refused.

pydantic-core also writes values that are not JSON (sets, bytes, datetimes): use this for
values already JSON-ready (a model's JSON-mode dump, a job envelope, a JSON column's
value), not where a non-JSON type must be refused (`app.queues.local.encode_body`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_json

_lenient = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_strict = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any, *, allow_nan: bool = True) -> str:
    """`value` as compact JSON text (raises TypeError or ValueError as `json.dumps` does).

    `allow_nan=False`: NaN and Infinity are refused (they are not JSON); with True they are
    written as the stdlib writes them, for columns that stored them before.
    """
    try:
        raw = to_json(value)
    except ValueError:
        raw = None  # pydantic-core's PydanticSerializationError is a ValueError
    # pydantic-core writes NaN and Infinity as bare constants: their absence from the text
    # proves there were none; their presence (perhaps inside a string) is for the stdlib.
    if raw is not None and (allow_nan or (b"NaN" not in raw and b"Infinity" not in raw)):
        return raw.decode()
    return (_lenient if allow_nan else _strict).encode(value)
