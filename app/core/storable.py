"""Strings the databases cannot store are refused where they enter, never at INSERT time.

PostgreSQL stores no NUL character, neither in text nor in JSONB (`\\u0000`), and no string
with a lone UTF-16 surrogate (`"\\ud800"` is valid JSON, but not valid Unicode, so it cannot
be encoded as UTF-8). Left alone, such a string fails the transaction that writes it: a 500
for its sender and, with group commit, for everyone sharing the transaction.

One check covers every route (`reject_unstorable`, an app-wide dependency): path
parameters (404: no resource can have such a name), query parameters, headers and JSON
bodies at any depth, dict keys included (422 naming each place in `errors[].loc`). Bodies
that a route parses itself (webhooks) call `check_storable` on what they parsed.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

from app.core.errors import FieldError, NotFound, ValidationFailed, printable

MAX_REPORTED = 20
NUL_MSG = "must not contain the NUL character (\\u0000)"
SURROGATE_MSG = "must be valid Unicode (no lone surrogate such as \\ud800)"


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored, or None when it can."""
    if "\x00" in text:
        return NUL_MSG
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_MSG
    return None


def find_unstorable(value: Any, loc: list[str | int]) -> list[FieldError]:
    """Every string in a parsed JSON value (keys too) that cannot be stored."""
    found: list[FieldError] = []
    stack: list[tuple[Any, list[str | int]]] = [(value, loc)]
    while stack and len(found) < MAX_REPORTED:
        item, where = stack.pop()
        if isinstance(item, str):
            reason = unstorable(item)
            if reason:
                found.append(
                    FieldError(loc=where, msg=f"a string {reason}", type="string_unstorable")
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                key = str(key)
                reason = unstorable(key)
                if reason:
                    found.append(
                        FieldError(
                            loc=[*where, printable(key)],
                            msg=f"a key {reason}",
                            type="string_unstorable",
                        )
                    )
                stack.append((child, [*where, key if not reason else printable(key)]))
        elif isinstance(item, list):
            stack.extend((child, [*where, index]) for index, child in enumerate(item))
    return found


def check_storable(value: Any, loc: list[str | int]) -> None:
    """Raise a 422 naming every unstorable string in `value`."""
    errors = find_unstorable(value, loc)
    if errors:
        raise unstorable_error(errors)


def unstorable_error(errors: list[FieldError]) -> ValidationFailed:
    names = ", ".join(".".join(str(p) for p in e.loc) for e in errors)
    return ValidationFailed(f"invalid characters in: {names}", errors=errors)


def _may_hold_unstorable(body: bytes) -> bool:
    # json.loads only makes NUL or a surrogate from a \u escape, from UTF-8-encoded
    # surrogate bytes (0xED 0xA0..0xBF, decoded with surrogatepass) or from a UTF-16/32
    # body (which holds NUL bytes): a body with none of these needs no walk.
    return b"\\u" in body or b"\xed" in body or b"\x00" in body


def find_unstorable_json(body: bytes, loc: list[str | int]) -> list[FieldError]:
    """`find_unstorable` on a raw JSON body; one that is not JSON is left to its parser."""
    if not body or not _may_hold_unstorable(body):
        return []
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    return find_unstorable(parsed, loc)


def is_json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def reject_unstorable(request: Request) -> None:
    """App-wide dependency: refuse unstorable strings in any part of the request."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and unstorable(value):
            raise NotFound(f"no resource has such a {name} (it {unstorable(value)})")
    errors: list[FieldError] = []
    for name, value in request.query_params.multi_items():
        reason = unstorable(name) or unstorable(value)
        if reason:
            errors.append(
                FieldError(loc=["query", printable(name)], msg=reason, type="string_unstorable")
            )
    for name, value in request.headers.items():
        # Credentials are never stored; a malformed one is the authentication's 401.
        if name != "authorization" and "\x00" in value:
            errors.append(FieldError(loc=["header", name], msg=NUL_MSG, type="string_unstorable"))
    route = request.scope.get("route")
    content_type = request.headers.get("content-type")
    if (
        isinstance(route, APIRoute)
        and route.body_field is not None
        and (content_type is None or is_json_media_type(content_type))
    ):
        # FastAPI has read and parsed the body already; both are cached on the request.
        body = await request.body()
        if body and _may_hold_unstorable(body):
            try:
                errors.extend(find_unstorable(await request.json(), ["body"]))
            except ValueError:
                pass  # not JSON: the route's own parsing answers that
    if errors:
        raise unstorable_error(errors[:MAX_REPORTED])
