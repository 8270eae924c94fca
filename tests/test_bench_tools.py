"""The small tools `make bench` measures with: the open-loop generator and the /proc readers.

Counts and parsing only; nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import procstat
from bench.fixed_rate import load, read_response


@pytest.mark.asyncio
async def test_read_response_drops_the_body_and_sees_connection_close() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\n\r\nhello")
    reader.feed_data(b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\n")
    reader.feed_data(b"Content-Length: 2\r\n\r\n{}")
    reader.feed_eof()

    assert await read_response(reader) == (202, True)
    assert await read_response(reader) == (429, False)


@pytest.mark.asyncio
async def test_chunked_answers_are_refused_not_misread() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    reader.feed_eof()

    with pytest.raises(ValueError, match="chunked"):
        await read_response(reader)


@pytest.mark.asyncio
async def test_fixed_rate_sends_every_due_request_and_counts_http_errors() -> None:
    """A loopback server answers 202 except every 5th request (503): all are sent once."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            seen.append(await reader.readexactly(length))
            status = b"503 Service Unavailable" if len(seen) % 5 == 0 else b"202 Accepted"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await load(
            f"http://127.0.0.1:{port}/v1/jobs",
            rate=200.0,
            duration=0.25,
            connections=4,
            body=b'{"type":"x"}',
            headers={"Content-Type": "application/json"},
        )

    assert result["requests"] == 50
    assert result["errors"] == 10
    assert seen == [b'{"type":"x"}'] * 50
    assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_proc_readers_see_this_process_and_nothing_once_gone() -> None:
    assert procstat.cpu_seconds(os.getpid()) >= 0
    assert procstat.rss_bytes(os.getpid()) > 1 << 20
    gone = 2**22 + 1  # above PID_MAX_LIMIT (2**22): never a process
    assert math.isnan(procstat.cpu_seconds(gone))
    assert procstat.rss_bytes(gone) == 0
    machine = procstat.machine()
    assert machine.cores == os.cpu_count()


def test_a_gateways_sqlite_writer_counts_with_it_and_other_children_do_not() -> None:
    """CPU and RSS of a gateway include its SQLite writer process (for RSS, its private
    pages), not a consumer it spawned."""
    sleep = "import time; print('ready', flush=True); time.sleep(30)"
    writer, other = (
        subprocess.Popen([sys.executable, "-c", sleep, mark], stdout=subprocess.PIPE, text=True)
        for mark in (procstat.HELPER_MARK.decode(), "consume")
    )
    try:
        for child in (writer, other):  # running Python, their heaps in place
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        helpers = procstat.with_helpers(os.getpid())
        assert helpers[0] == os.getpid()
        assert writer.pid in helpers
        assert other.pid not in helpers
        own = procstat.rss_bytes(other.pid)  # no helper: its own VmRSS
        assert own > 1 << 20
        # The writer's private pages (a Python process's heap: megabytes) count with us.
        mine = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
        assert procstat.rss_bytes(os.getpid()) > mine + (1 << 20)
    finally:
        for child in (writer, other):
            child.kill()
            child.wait()
    assert writer.pid not in procstat.with_helpers(os.getpid())
