"""What every request body shares: strict validation, so the API takes what its document says.

Lax pydantic would accept `0` for a boolean, `42` for a string and a Unix time for a
date-time; the document promises a 422 for each. FastAPI validates a parsed body in Python
mode, where strict would also refuse the JSON text of a date-time or an enum member, so
those fields parse their text laxly and refuse numbers (`JsonDatetime`, `JsonEnum`); and
JSON Schema counts `3.0` as an integer, which strict refuses (`JsonInt`).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, TypeVar

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Strict
from pydantic_core import PydanticCustomError

EnumT = TypeVar("EnumT", bound=Enum)
IntT = TypeVar("IntT", bound=int)


class RequestBody(BaseModel):
    """Base of every model the API reads from a request body (and of the stored job
    payloads, which are read back the same way)."""

    model_config = ConfigDict(strict=True)


# The start of an RFC 3339 date-time; pydantic alone would also read "0" or "1700000000"
# (Unix times) and a bare date.
_DATE_TIME_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _date_time_text(value: Any) -> Any:
    # A datetime object passes (models built in code); JSON gives text, never a number.
    if isinstance(value, datetime) or (isinstance(value, str) and _DATE_TIME_START.match(value)):
        return value
    raise PydanticCustomError(
        "datetime_type", "Input should be a valid datetime in RFC 3339, e.g. 2026-11-28T13:00:00Z"
    )


def _number_not_text(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer (lax int takes it, and refuses 3.5); `true` and
    # "3" are not numbers at all.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# `JsonInt[int]`; with constraints on an optional field, put them inside
# (`JsonInt[Annotated[int, Field(ge=0)]] | None`): outside, the union would document them as
# `ge`/`le` rather than `minimum`/`maximum`.
JsonInt = Annotated[IntT, Strict(False), BeforeValidator(_number_not_text)]
JsonDatetime = Annotated[datetime, Strict(False), BeforeValidator(_date_time_text)]
JsonAwareDatetime = Annotated[AwareDatetime, Strict(False), BeforeValidator(_date_time_text)]
# An enum member from its JSON value (a string); strict would want the member object itself.
JsonEnum = Annotated[EnumT, Strict(False)]
