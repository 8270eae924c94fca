"""Identifiers: time-ordered UUIDv7 strings (newest-first listing is an index scan)."""

from __future__ import annotations

import os
import secrets
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def _uuid7_int() -> int:
    """A UUIDv7 (RFC 9562) with a 12-bit counter, monotonic within this process."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _counter = now_ms, int.from_bytes(os.urandom(2)) & 0x3FF
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8)) & 0x3FFF_FFFF_FFFF_FFFF
    return (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b


def uuid7() -> str:
    """A UUIDv7 string, as str(uuid.UUID(...)) gives it, without building the object."""
    h = f"{_uuid7_int():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_hex() -> str:
    """A UUIDv7 as 32 lowercase hex characters (the shape of a queue message id). Keys
    that grow with time are appended to their B-tree; random ones land on a random page
    each, so every insert would dirty (and, with a large table, read) another page."""
    return f"{_uuid7_int():032x}"


def hex_id() -> str:
    """32 lowercase hex characters, the shape of Cloudflare's resource identifiers."""
    return secrets.token_hex(16)
