"""Identifiers: time-ordered UUIDv7 strings (newest-first listing is an index scan)."""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


class _Entropy:
    """Bytes from `os.urandom`, read 4 KiB at a time. Each `os.urandom` call is a syscall
    that releases the GIL: on the gateway's hot path (two ids and a request id per job) the
    event loop then waited for another thread (the database's) to hand the GIL back. The pool
    is dropped in a forked child, which must not repeat its parent's bytes."""

    CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._used = 0

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._used + size > len(self._pool):
                self._pool, self._used = os.urandom(max(self.CHUNK, size)), 0
            start = self._used
            self._used += size
            return self._pool[start : self._used]

    def forget(self) -> None:
        self._pool, self._used = b"", 0


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.forget)


def random_bytes(size: int) -> bytes:
    """`size` bytes from the OS's CSPRNG (as `os.urandom`), without a syscall per call."""
    return _entropy.take(size)


def random_hex(size: int) -> str:
    """`secrets.token_hex(size)` from the same pool."""
    return random_bytes(size).hex()


def _uuid7_int() -> int:
    """A UUIDv7 (RFC 9562) with a 12-bit counter, monotonic within this process."""
    global _last_ms, _counter
    entropy = random_bytes(10)
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _counter = now_ms, int.from_bytes(entropy[8:]) & 0x3FF
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(entropy[:8]) & 0x3FFF_FFFF_FFFF_FFFF
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
    return random_hex(16)
