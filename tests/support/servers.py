"""Run jobgate commands (and other HTTP servers) as real subprocesses on loopback.

`ServerProcess` starts a server on a free 127.0.0.1 port and returns once a readiness path
answers 200 (or, for a process that serves no HTTP such as `jobgate consume`, once it is
spawned: `jobgate_process`); `run_jobgate` runs one-shot commands (`db upgrade`,
`tenants create`) with the same environment. Environments come from `jobgate_env`, which
drops every inherited `JOBGATE_*` variable so a subprocess sees exactly the settings the
caller chose, including the PostgreSQL schema of the test run (`JOBGATE_DATABASE_SCHEMA`).
`running_stack` starts a whole deployment (gateway, consumer, emulator) for end-to-end tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from app.core.clock import write_clock_offset
from app.core.config import REPO_ROOT
from tests.support.waiting import wait_until_sync

if TYPE_CHECKING:
    from tests.emulator.conftest import Emulator

# `jobgate serve` and `jobgate consume` refuse to start without an explicit secret key.
TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
_OUTPUT_TAIL_CHARS = 4000
_PORT_ATTEMPTS = 3

Argv = Sequence[str] | Callable[[int], Sequence[str]]


class ServerStartError(RuntimeError):
    """The server exited, or did not answer its readiness path in time (output attached)."""


class CommandFailed(RuntimeError):
    """A one-shot command exited non-zero (its output is in the message)."""


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (start-up retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def jobgate_argv(*args: str) -> list[str]:
    """The `jobgate` console script of this interpreter, else `python -m app`."""
    script = Path(sys.executable).with_name("jobgate")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "app", *args]


def jobgate_env(
    database_url: str,
    *,
    schema: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The process environment minus inherited `JOBGATE_*`, plus the given database.

    Every command of one test gets the same `TEST_SECRET_KEY`, so what one encrypts
    (`tenants create`) another decrypts (`serve`).
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBGATE_")}
    env["JOBGATE_DATABASE_URL"] = database_url
    env["JOBGATE_SECRET_KEY"] = TEST_SECRET_KEY
    env["JOBGATE_ENVIRONMENT"] = "test"
    env["JOBGATE_LOG_LEVEL"] = "warning"
    env["JOBGATE_HOST"] = "127.0.0.1"
    if schema:
        env["JOBGATE_DATABASE_SCHEMA"] = schema
    env.update(extra or {})
    return env


def call_jobgate(
    *args: str, env: Mapping[str, str], stdin: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run `jobgate ARGS...` from the repository root to completion, whatever its exit code."""
    return subprocess.run(
        jobgate_argv(*args),
        env=dict(env),
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_jobgate(*args: str, env: Mapping[str, str], timeout: float = 120.0) -> str:
    """Run `jobgate ARGS...` to completion and return its stdout; raise on failure."""
    argv = jobgate_argv(*args)
    try:
        done = call_jobgate(*args, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{' '.join(argv)} timed out after {timeout} s") from exc
    if done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-_OUTPUT_TAIL_CHARS:]}\n"
            f"stderr:\n{done.stderr[-_OUTPUT_TAIL_CHARS:]}"
        )
    return done.stdout


async def run_jobgate_async(*args: str, env: Mapping[str, str], timeout: float = 120.0) -> str:
    """`run_jobgate` for async tests with a gateway in-process: the command runs in a thread,
    so the gateway's background loops keep running (on SQLite one of them may hold the write
    lock the command waits for, which a blocked event loop would never release)."""
    return await asyncio.to_thread(run_jobgate, *args, env=env, timeout=timeout)


def db_upgrade(env: Mapping[str, str]) -> None:
    run_jobgate("db", "upgrade", env=env)


def create_tenant(env: Mapping[str, str], name: str) -> dict[str, str]:
    """`jobgate tenants create NAME --json`: {"tenant_id", "api_key", "webhook_secret"}."""
    created: dict[str, str] = json.loads(run_jobgate("tenants", "create", name, "--json", env=env))
    return created


class ServerProcess:
    """One server subprocess listening on 127.0.0.1.

    Guarantees: `start()` returns only once GET `ready_path` answered 200; if the process
    exits first or `startup_timeout` passes, it is killed and `ServerStartError` carries its
    stdout and stderr. A port taken between picking and binding is retried with another.
    `kill()` (SIGKILL) and `terminate()` (SIGTERM, then SIGKILL after a grace period) wait
    for the process and are no-ops once it has exited. The context manager terminates.

    `argv` is a list, or a function of the port for servers that take it as a flag; the port
    is also passed as `JOBGATE_PORT` (how `jobgate serve` reads it). With `ready_path=None`
    the process serves no HTTP: `start()` returns once it is spawned.
    """

    def __init__(
        self,
        argv: Argv,
        *,
        env: Mapping[str, str],
        ready_path: str | None = "/healthz",
        startup_timeout: float = STARTUP_TIMEOUT_S,
        cwd: Path | None = None,
    ) -> None:
        self._argv = argv
        self._env = dict(env)
        self._ready_path = ready_path
        self._startup_timeout = startup_timeout
        self._cwd = cwd or REPO_ROOT
        self._logs = tempfile.TemporaryDirectory(prefix="jobgate-proc-")
        self._starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def start(self) -> ServerProcess:
        for attempt in range(_PORT_ATTEMPTS):
            self._spawn(free_port())
            try:
                self._wait_ready()
                return self
            except ServerStartError as exc:
                in_use = "address already in use" in str(exc).lower()
                if not in_use or attempt == _PORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as in a crash or an OOM kill."""
        if self.running:
            proc = self._require()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM and wait (a graceful stop); SIGKILL if it outlives `timeout`."""
        if not self.running:
            return
        proc = self._require()
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        """Stdout and stderr of the latest start (tails), for error messages."""
        parts = []
        for stream in ("stdout", "stderr"):
            path = self._log_path(stream)
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"{stream}:\n{text[-_OUTPUT_TAIL_CHARS:]}")
        return "\n".join(parts)

    def log_text(self, stream: str = "stderr") -> str:
        """The whole stdout or stderr of the latest start (e.g. to parse its log lines)."""
        path = self._log_path(stream)
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self.terminate()
        self._logs.cleanup()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("the server was not started")
        return self._proc

    def _log_path(self, stream: str) -> Path:
        return Path(self._logs.name) / f"{self._starts}.{stream}.log"

    def _spawn(self, port: int) -> None:
        if self.running:
            raise RuntimeError(f"the server is already running (pid {self.pid})")
        self.port = port
        self._starts += 1
        argv = list(self._argv(port) if callable(self._argv) else self._argv)
        env = {**self._env, "JOBGATE_PORT": str(port)}
        # Files, not pipes: a chatty server must never block on a full pipe buffer.
        with (
            self._log_path("stdout").open("ab") as out,
            self._log_path("stderr").open("ab") as err,
        ):
            self._proc = subprocess.Popen(
                argv, env=env, cwd=self._cwd, stdout=out, stderr=err, start_new_session=True
            )

    def _wait_ready(self) -> None:
        proc = self._require()
        if self._ready_path is None:
            return
        deadline = time.monotonic() + self._startup_timeout
        url = self.url(self._ready_path)
        last_error = "no answer yet"
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise ServerStartError(
                        f"{self._describe()} exited with {proc.returncode} before it was "
                        f"ready\n{self.output()}"
                    )
                try:
                    response = http.get(url)
                except httpx.TransportError as exc:
                    last_error = repr(exc)
                else:
                    if response.status_code == 200:
                        return
                    last_error = f"HTTP {response.status_code}"
                time.sleep(0.1)
        self.kill()
        raise ServerStartError(
            f"{self._describe()} did not answer GET {url} with 200 within "
            f"{self._startup_timeout} s (last: {last_error})\n{self.output()}"
        )

    def _describe(self) -> str:
        argv = self._argv(self.port) if callable(self._argv) else self._argv
        return f"`{' '.join(argv)}` (port {self.port})"


def jobgate_server(
    *args: str,
    env: Mapping[str, str],
    ready_path: str = "/healthz",
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> ServerProcess:
    """A `jobgate ARGS...` server (e.g. `serve`), not started yet."""
    return ServerProcess(
        jobgate_argv(*args), env=env, ready_path=ready_path, startup_timeout=startup_timeout
    )


def jobgate_process(*args: str, env: Mapping[str, str]) -> ServerProcess:
    """A `jobgate ARGS...` process that serves no HTTP (e.g. `consume`), not started yet."""
    return ServerProcess(jobgate_argv(*args), env=env, ready_path=None)


# --- A whole deployment: gateway + consumer (+ emulator) ---------------------------------

E2E_QUEUE = "analytics-events"
E2E_WAIT_S = 60.0


class Consumer:
    """`jobgate consume --queue analytics-events` as a subprocess (output in files)."""

    def __init__(self, env: Mapping[str, str], logs: Path) -> None:
        self._env, self._logs, self._n = env, logs, 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._n += 1
        with (self._logs / f"consumer{self._n}.log").open("ab") as out:
            self.proc = subprocess.Popen(
                jobgate_argv("consume", "--queue", E2E_QUEUE),
                env=dict(self._env),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,  # the handler modules live in `tests`
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S * 4)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self._logs.glob("*.log"))


class Stack:
    """A running gateway and consumer on one backend, one tenant, and a shared test clock.

    Time moves for every process at once (the clock file `JOBGATE_TEST_CLOCK_FILE` for the
    gateway and the consumer, `/_emulator/clock` for the emulator).
    """

    def __init__(
        self,
        http: httpx.Client,
        consumer: Consumer,
        clock_file: Path,
        tenant: Mapping[str, str],
        env: Mapping[str, str],
        emulator: Emulator | None = None,
    ) -> None:
        self.http, self.consumer, self.clock_file = http, consumer, clock_file
        self.tenant_id = tenant["tenant_id"]
        self.headers = {"Authorization": f"Bearer {tenant['api_key']}"}
        self.env = dict(env)
        self.offset_ms = 0
        self.emulator = emulator

    @property
    def base_url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def operator_key(self, name: str = "ops") -> str:
        """A new operator's API key (`jobgate operators create`)."""
        created = json.loads(run_jobgate("operators", "create", name, "--json", env=self.env))
        key: str = created["api_key"]
        return key

    def advance(self, seconds: float) -> None:
        self.offset_ms += int(seconds * 1000)
        write_clock_offset(self.clock_file, self.offset_ms)
        if self.emulator is not None:
            self.emulator.advance(seconds)

    def submit(self, mode: str) -> str:
        body = {"type": "analytics-event", "name": "e2e", "properties": {"mode": mode}}
        response = self.http.post("/v1/jobs", json=body, headers=self.headers)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}", headers=self.headers)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def wait_acked(self) -> None:
        """Wait until the queue holds no leased message. With Cloudflare the consumer writes
        the job store before it acks, so a job can read `retrying` while its message is still
        leased: moving the clock then would start the retry delay late. On the local engine
        both are one transaction."""
        emulator = self.emulator
        if emulator is None:
            return
        self.wait(
            "the consumer's acks",
            lambda: all(q["in_flight"] == 0 for q in emulator.control("GET", "state")["queues"]),
        )

    def wait(self, what: str, check: Callable[[], bool], timeout: float = E2E_WAIT_S) -> None:
        def done() -> bool:
            proc = self.consumer.proc
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the consumer exited\n{self.consumer.output()}")
            return check()

        wait_until_sync(
            done,
            timeout=timeout,
            message=lambda: f"timed out waiting for {what}\n{self.consumer.output()}",
        )


def emulated_cloudflare(database: tuple[str, str | None]) -> tuple[Emulator, dict[str, str]]:
    """A started `jobgate emulator`, and the settings that point a gateway and a consumer at
    it (the cloudflare backend, the outbox publishing at once). The caller closes it."""
    # Imported here: that module imports this one.
    from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator

    emulator = Emulator(start_emulator(emulator_env(database)))
    return emulator, {
        "JOBGATE_QUEUE_BACKEND": "cloudflare",
        "JOBGATE_CF_API_TOKEN": TOKEN,
        "JOBGATE_CF_ACCOUNT_ID": ACCOUNT,
        "JOBGATE_CF_API_BASE_URL": emulator.api_url,
        "JOBGATE_OUTBOX_LINGER_MS": "0",
        "JOBGATE_OUTBOX_POLL_MS": "50",
    }


@contextmanager
def running_stack(
    backend: str,
    database: tuple[str, str | None],
    tmp_path: Path,
    *,
    consumer: Mapping[str, Any],
    extra_env: Mapping[str, str],
) -> Iterator[Stack]:
    """`jobgate serve` + `jobgate consume` on `backend` ("local", or "cloudflare" against a
    `jobgate emulator`), with `consumer` as the `analytics-events` consumer of wrangler.jsonc
    and a tenant named "e2e". `extra_env` names the handler modules and what they need."""
    # Imported here: that module imports this one.
    from tests.consumer.conftest import write_topology

    url, schema = database
    emulator: Emulator | None = None
    backend_env: dict[str, str] = {}
    if backend == "cloudflare":
        emulator, backend_env = emulated_cloudflare(database)
    clock_file = tmp_path / "clock"
    write_clock_offset(clock_file, 0)
    topology = write_topology(tmp_path / "wrangler.jsonc", dict(consumer))
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_WRANGLER_CONFIG": str(topology),
            "JOBGATE_TEST_CLOCK_FILE": str(clock_file),
            "JOBGATE_CONSUMER_POLL_MIN_MS": "50",
            "JOBGATE_CONSUMER_POLL_MAX_MS": "200",
            "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
            # The console script does not put the working directory on sys.path.
            "PYTHONPATH": str(REPO_ROOT),
            **extra_env,
            **backend_env,
        },
    )
    try:
        tenant = create_tenant(env, "e2e")
        process = Consumer(env, tmp_path)
        with jobgate_server("serve", env=env) as gateway:
            process.start()
            with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
                try:
                    yield Stack(http, process, clock_file, tenant, env, emulator)
                finally:
                    process.terminate()
    finally:
        if emulator is not None:
            emulator.close()
