"""Identifiers: UUIDv7 shape and order, and the pooled OS randomness behind them (few
syscalls, nothing repeated, a forked child never repeating its parent's bytes)."""

from __future__ import annotations

import os
import uuid

import pytest

from app.core import ids


def test_uuid7_is_a_time_ordered_rfc_9562_uuid() -> None:
    made = [ids.uuid7() for _ in range(5000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)  # monotonic within the process, even within a millisecond
    for text in made[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    assert all(len(h) == 32 and int(h, 16) >= 0 for h in (ids.uuid7_hex() for _ in range(10)))


def test_ids_made_many_at_once_keep_the_order_of_ids_made_one_at_a_time() -> None:
    made: list[str] = []
    for _ in range(50):
        made += ids.uuid7_many(100)
        made.append(ids.uuid7())
    # 5,050 ids in a few milliseconds: the 12-bit counter borrows the next millisecond.
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert all(uuid.UUID(text).version == 7 and str(uuid.UUID(text)) == text for text in made)
    hexes = ids.uuid7_hex_many(3000) + [ids.uuid7_hex()] + ids.uuid7_hex_many(1)
    assert len(set(hexes)) == len(hexes)
    assert hexes == sorted(hexes)
    assert all(len(h) == 32 and uuid.UUID(hex=h).version == 7 for h in hexes)
    assert ids.uuid7_many(0) == []
    assert ids.uuid7_hex_many(0) == []


def test_random_bytes_never_repeat_across_the_pool_boundary() -> None:
    sizes = [7, 13, 4096, 3, 5000, 1, 4095, 16] * 20
    seen = [ids.random_bytes(size) for size in sizes]
    assert [len(b) for b in seen] == sizes
    sixteen = [b for b in seen if len(b) == 16] + [ids.random_bytes(16) for _ in range(2000)]
    assert len(set(sixteen)) == len(sixteen)
    assert len(ids.random_hex(12)) == 24


def test_ids_do_not_make_a_syscall_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `os.urandom` releases the GIL: the gateway's event loop then waited for its
    writer thread on every id (about 20% of its throughput)."""
    calls = 0
    real = os.urandom

    def counting(size: int) -> bytes:
        nonlocal calls
        calls += 1
        return real(size)

    monkeypatch.setattr(os, "urandom", counting)
    for _ in range(1000):
        ids.uuid7()
        ids.random_hex(8)
    assert calls <= 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    ids.random_bytes(1)  # the pool holds unread bytes the child inherits
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next bytes, to the parent
        try:
            os.write(write_end, ids.random_bytes(32))
        finally:
            os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 32)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != ids.random_bytes(32)
