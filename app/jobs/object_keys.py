"""Object keys as jobs carry them (R2/S3 rules), checked at accept time and by object stores."""

from __future__ import annotations

MAX_KEY_BYTES = 1024  # R2's and S3's limit
# A job's key is stored under "<tenant id>/" (ids have at most 36 characters) and its
# thumbnails under "<key>/thumb-<w>x<h>" (sides up to 8192): an accepted key must leave room.
TENANT_PREFIX_BYTES = 37
THUMBNAIL_SUFFIX_BYTES = len("/thumb-8192x8192")
MAX_JOB_KEY_BYTES = MAX_KEY_BYTES - TENANT_PREFIX_BYTES - THUMBNAIL_SUFFIX_BYTES


class InvalidKey(ValueError):
    """A key that is empty, too long, or contains control characters."""


def check_key(key: str) -> str:
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey("an object key is 1 to 1024 bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidKey("an object key must not contain control characters")
    return key
