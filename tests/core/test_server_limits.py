"""`jobgate serve` bounds request heads, their arrival time, keep-alive and connections.

Every test runs the real command on loopback and talks raw sockets to it, since the limits
live below the ASGI app (app/core/server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServerProcess, db_upgrade, jobgate_env, jobgate_server

MAX_HEADER_BYTES = 16_384


def _env(tmp: Path, **limits: str) -> dict[str, str]:
    env = jobgate_env(f"sqlite:///{tmp / 'server.db'}", extra=limits)
    db_upgrade(env)
    return env


def _raise_fd_limit(wanted: int) -> None:
    """Sockets of this process and the server (which inherits the limit) need room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < target:
        pytest.skip(f"needs {wanted} open files, `ulimit -n` allows fewer")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = _env(
        tmp_path_factory.mktemp("limits"),
        JOBGATE_HTTP_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        JOBGATE_HTTP_HEADER_TIMEOUT_SECONDS="1.5",
        JOBGATE_HTTP_KEEP_ALIVE_SECONDS="1",
    )
    with jobgate_server("serve", env=env) as running:
        yield running


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65_536):
            received += chunk
    return received


def test_oversized_head_is_refused_with_431_and_closed(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for _ in range(8):  # 4x the cap, never finished
                sock.sendall(b"a" * (MAX_HEADER_BYTES // 2))
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer


def test_a_complete_oversized_head_in_one_write_is_refused_with_431(
    server: ServerProcess,
) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 100)
    with _connect(server) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(head + b"\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer


def test_head_under_the_cap_and_large_bodies_still_pass(server: ServerProcess) -> None:
    headers = {"X-Filler": "f" * (MAX_HEADER_BYTES // 2)}
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        assert http.get("/healthz", headers=headers).status_code == 200
        # A body is not a head: 40 KB of body after a small head reaches the app (401 here).
        big = http.post(
            "/v1/jobs",
            content=b"{" + b" " * 40_000 + b"}",
            headers={"content-type": "application/json"},
        )
    assert big.status_code == 401


def test_silent_and_slow_connections_are_closed_after_the_header_timeout(
    server: ServerProcess,
) -> None:
    with _connect(server) as silent, _connect(server) as slow:
        started = time.monotonic()
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(3):  # still trickling when the deadline passes
            time.sleep(0.3)
            slow.sendall(b"X")
        answers = [_read_until_closed(silent), _read_until_closed(slow)]
        elapsed = time.monotonic() - started
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert 1.0 < elapsed < 8.0


def test_idle_keep_alive_connections_are_closed(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65_536)
        assert first.startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        rest = _read_until_closed(sock)
        assert rest == b""  # closed without another response
        assert time.monotonic() - started < 6.0


def test_connections_over_the_cap_answer_503(tmp_path: Path) -> None:
    env = _env(tmp_path, JOBGATE_HTTP_MAX_CONNECTIONS="4")
    with jobgate_server("serve", env=env) as running:
        held = [_connect(running) for _ in range(4)]
        try:
            time.sleep(0.3)  # let the server accept them
            with httpx.Client(base_url=running.base_url, timeout=10) as http:
                refused = http.get("/healthz")
                assert refused.status_code == 503
                assert refused.headers["content-type"] == "application/problem+json"
                held.pop().close()
                time.sleep(0.3)
                assert http.get("/healthz").status_code == 200
        finally:
            for sock in held:
                sock.close()


# --- the target: slow-loris plus huge unfinished heads ----------------------------

SLOW_CONNECTIONS = 1000
BIG_HEADS = 20
BIG_HEAD_BYTES = 20 * 1024 * 1024
HEADER_TIMEOUT_S = 8.0


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Attack:
    """Slow and oversized heads sent from a thread with its own event loop."""

    port: int
    opened: threading.Event = field(default_factory=threading.Event)
    slow_lifetimes: list[float] = field(default_factory=list)
    slow_answers: list[bytes] = field(default_factory=list)
    big_sent: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        slow = []
        for start in range(0, SLOW_CONNECTIONS, 100):  # in batches: stay under the backlog
            batch = [self._open() for _ in range(start, min(start + 100, SLOW_CONNECTIONS))]
            slow += await asyncio.gather(*batch)
        self.opened.set()
        await asyncio.gather(
            *(self._trickle(*conn) for conn in slow), *(self._big() for _ in range(BIG_HEADS))
        )

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
        # Timed from before the connect: the server's deadline starts when it accepts, which
        # is never earlier, while this coroutine may resume long after the connect under load.
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return reader, writer, started

    async def _trickle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: float
    ) -> None:
        answer = b""
        try:
            writer.write(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            while not reader.at_eof():
                with contextlib.suppress(TimeoutError):
                    answer += await asyncio.wait_for(reader.read(4096), timeout=1.0)
                    continue
                writer.write(b"z")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        self.slow_lifetimes.append(time.monotonic() - opened)
        self.slow_answers.append(answer)
        writer.close()

    async def _big(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        sent = 0
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"b" * 65_536
            while sent < BIG_HEAD_BYTES:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        self.big_sent.append(sent)
        writer.close()


@pytest.mark.slow
def test_slow_loris_and_huge_heads_leave_the_gateway_responsive(tmp_path: Path) -> None:
    _raise_fd_limit(3 * SLOW_CONNECTIONS + 1024)
    env = _env(tmp_path, JOBGATE_HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT_S))
    with (
        jobgate_server("serve", env=env) as running,
        httpx.Client(base_url=running.base_url, timeout=10) as http,
    ):
        for _ in range(50):  # warm up, so the baseline includes a served request
            http.get("/healthz")
        baseline = _rss_bytes(running.pid)
        attack = Attack(running.port)
        attacker = threading.Thread(target=attack.run, daemon=True)
        attack_started = time.monotonic()
        attacker.start()
        assert attack.opened.wait(30), "could not open the slow connections"
        latencies, peak = [], baseline
        while time.monotonic() - attack_started < HEADER_TIMEOUT_S - 1.5:
            started = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            peak = max(peak, _rss_bytes(running.pid))
            time.sleep(0.01)
        attacker.join(timeout=HEADER_TIMEOUT_S + 30)
        assert not attacker.is_alive(), "the server kept slow connections open"
        peak = max(peak, _rss_bytes(running.pid))

    p99 = statistics.quantiles(latencies, n=100)[98]
    growth_mb = (peak - baseline) / 1e6
    print(
        f"healthz n={len(latencies)} p50={statistics.median(latencies) * 1000:.1f} ms "
        f"p99={p99 * 1000:.1f} ms; RSS {baseline / 1e6:.0f} MB -> peak {peak / 1e6:.0f} MB; "
        f"slow lifetimes {min(attack.slow_lifetimes):.1f}-{max(attack.slow_lifetimes):.1f} s; "
        f"big heads cut at <= {max(attack.big_sent) / 1e6:.1f} MB"
    )
    assert len(latencies) >= 100
    assert p99 < 0.100
    assert growth_mb < 50
    assert len(attack.slow_lifetimes) == SLOW_CONNECTIONS
    assert min(attack.slow_lifetimes) >= HEADER_TIMEOUT_S - 0.5
    assert max(attack.slow_lifetimes) < HEADER_TIMEOUT_S + 20
    assert sum(answer.startswith(b"HTTP/1.1 408 ") for answer in attack.slow_answers) >= (
        SLOW_CONNECTIONS * 0.95
    )
    assert len(attack.big_sent) == BIG_HEADS
    assert max(attack.big_sent) < BIG_HEAD_BYTES  # every one was cut off
