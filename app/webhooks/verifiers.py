"""Standard Webhooks (https://www.standardwebhooks.com) signing and verification, stdlib only.

Signed content is `webhook-id + "." + webhook-timestamp + "." + raw body`, HMAC-SHA256 with
the base64-decoded part of a `whsec_...` secret, sent as `v1,<base64>`; several
space-separated signatures may be sent (rotation) and any `v1` match with any active secret
is accepted. Verification works on the raw bytes, compares in constant time, accepts only a
digits-only timestamp within the tolerance in both directions, and raises one exception type
whatever is wrong with the headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300
# A webhook-id is echoed into storage: keep it short and free of `.` (the field separator).
_ID_RE = re.compile(r"^[A-Za-z0-9_\-:]{1,255}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
_MAX_SIGNATURES = 16


class WebhookVerificationError(Exception):
    """The request is not a valid, fresh Standard Webhooks delivery (always a 401)."""


@dataclass(frozen=True, slots=True)
class VerifiedHeaders:
    message_id: str
    timestamp: int
    # Index of the secret that matched, so operators can see when an old one stops being used.
    secret_index: int


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (prefix optional, padding optional)."""
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    if not raw:
        raise ValueError("a webhook secret must not be empty")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise WebhookVerificationError(f"missing {name} header")
    return value.strip()


def _signatures(header: str) -> list[bytes]:
    """The decoded `v1` entries; other versions (`v1a`, `v2`) and garbage are skipped."""
    found: list[bytes] = []
    for entry in header.split(" ")[: _MAX_SIGNATURES * 2]:
        version, sep, value = entry.partition(",")
        if not sep or version != "v1":
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found[:_MAX_SIGNATURES]


def verify(
    body: bytes,
    headers: Mapping[str, str],
    keys: Sequence[bytes],
    *,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> VerifiedHeaders:
    """Check one delivery; raises WebhookVerificationError (never anything else) if invalid.

    `headers` must look names up case-insensitively (Starlette's Headers do); `now` is Unix
    seconds from the caller's clock.
    """
    message_id, timestamp = check_fresh(headers, now=now, tolerance=tolerance)
    signatures = _signatures(_header(headers, "webhook-signature"))
    if not signatures:
        raise WebhookVerificationError("no v1 signature")
    signed = f"{message_id}.{timestamp}.".encode() + body
    matched: int | None = None
    # Every key is tried against every signature, so timing does not reveal which matched.
    for index, key in enumerate(keys):
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for signature in signatures:
            if hmac.compare_digest(expected, signature) and matched is None:
                matched = index
    if matched is None:
        raise WebhookVerificationError("no signature matches")
    return VerifiedHeaders(message_id=message_id, timestamp=timestamp, secret_index=matched)


def check_fresh(
    headers: Mapping[str, str], *, now: int, tolerance: int = DEFAULT_TOLERANCE_SECONDS
) -> tuple[str, int]:
    """Headers present and well formed, timestamp within ±tolerance: (id, timestamp)."""
    message_id = _header(headers, "webhook-id")
    raw_timestamp = _header(headers, "webhook-timestamp")
    _header(headers, "webhook-signature")
    if not _ID_RE.match(message_id):
        raise WebhookVerificationError("malformed webhook-id")
    if not _TIMESTAMP_RE.match(raw_timestamp):
        raise WebhookVerificationError("malformed webhook-timestamp")
    timestamp = int(raw_timestamp)
    if timestamp < now - tolerance:
        raise WebhookVerificationError("timestamp too old")
    if timestamp > now + tolerance:
        raise WebhookVerificationError("timestamp too new")
    return message_id, timestamp


def sign_headers(
    secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Headers of a delivery signed with every given secret (the CLI and tests use this)."""
    signature = " ".join(sign(decode_secret(s), message_id, timestamp, body) for s in secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
