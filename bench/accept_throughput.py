"""Single-job accept throughput of the gateway, as a ratio of a bare FastAPI app's.

Both run under uvicorn with the same flags (1 worker, loopback, log level warning, no access
log) and are loaded one at a time, in the same run, by the same generator (wrk, else
`bench/httpx_load.py`) with the same concurrency. The gateway uses a fresh SQLite file
(`synchronous=FULL`, the default: an fsync per commit), optionally also `NORMAL`, and a
fresh PostgreSQL schema when JOBGATE_DATABASE_URL points at PostgreSQL.

    .venv/bin/python bench/accept_throughput.py [--duration 10] [--rounds 1] [--sync both]

See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
sys.path.insert(0, str(REPO_ROOT))  # for tests.support when run as a script


from tests.support.databases import fresh_pg_schema, postgres_url_from_env  # noqa: E402
from tests.support.servers import (  # noqa: E402
    ServerProcess,
    create_tenant,
    db_upgrade,
    jobgate_argv,
    jobgate_env,
)

UVICORN_FLAGS = [
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--log-level",
    "warning",
    "--no-access-log",
]
JOB_BODY = json.dumps({"type": "sync-single-order", "orderId": 42}, separators=(",", ":"))
PATH = "/v1/jobs"
# A long run must not reach the in-flight quota or a queue's high watermark: the benchmarks
# measure the job path, not admission refusing work (bench/admission_overload.py does that).
UNLIMITED_ADMISSION = {
    "JOBGATE_ADMISSION_MAX_IN_FLIGHT": "100000000",
    "JOBGATE_ADMISSION_HIGH_MESSAGES": "100000000",
    "JOBGATE_ADMISSION_LOW_MESSAGES": "50000000",
}
WRK_DONE_MARK = "BENCH-JSON "
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"seconds":%%f,"p50_ms":%%f,"p99_ms":%%f,"errors":%%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, e.connect + e.read + e.write + e.timeout + e.status))
end
"""


@dataclass(frozen=True, slots=True)
class Measurement:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(slots=True)
class Target:
    label: str
    server: ServerProcess
    api_key: str
    results: list[Measurement]


Generator = Callable[[str, str, float, int], Measurement]


def uvicorn_argv(app: str, *, factory: bool = False, app_dir: Path = REPO_ROOT) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir), *UVICORN_FLAGS]
    return [*argv, "--factory"] if factory else argv


def with_port(argv: list[str]) -> Callable[[int], list[str]]:
    return lambda port: [*argv, "--port", str(port)]


def wrk_generator(threads: int, body: str = JOB_BODY) -> Generator:
    def run(url: str, key: str, duration: float, connections: int) -> Measurement:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT % {"body": body, "key": key, "mark": WRK_DONE_MARK})
        try:
            done = subprocess.run(
                [
                    "wrk",
                    f"-t{threads}",
                    f"-c{connections}",
                    f"-d{max(1, round(duration))}s",
                    "--timeout",
                    "30s",
                    "-s",
                    script.name,
                    url,
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=duration + 120,
            )
        finally:
            os.unlink(script.name)
        for line in done.stdout.splitlines():
            if line.startswith(WRK_DONE_MARK):
                return Measurement(**json.loads(line.removeprefix(WRK_DONE_MARK)))
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")

    return run


def httpx_generator(
    url: str, key: str, duration: float, connections: int, body: str = JOB_BODY
) -> Measurement:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIR / "httpx_load.py"),
            url,
            "--duration",
            str(duration),
            "--connections",
            str(connections),
            "--body",
            body,
            "-H",
            "Content-Type: application/json",
            "-H",
            f"Authorization: Bearer {key}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 120,
    )
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def pg_url() -> str | None:
    return postgres_url_from_env()


def pg_schema(url: str) -> AbstractContextManager[str]:
    return fresh_pg_schema(url, "bench")


def gateway_env(url: str, schema: str | None, sync: str) -> dict[str, str]:
    return jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_SQLITE_SYNCHRONOUS": sync,
            # Measure the accept path, not the per-tenant rate limit.
            "JOBGATE_RATE_LIMIT_JOBS": "100000000/minute",
            "JOBGATE_ADMISSION_RATE_LIMIT_BATCH": "100000000/minute",
            **UNLIMITED_ADMISSION,
        },
    )


def start_gateway(
    stack: ExitStack,
    label: str,
    env: dict[str, str],
    *,
    serve: bool = False,
    api_key: str | None = None,
) -> Target:
    """The gateway under plain uvicorn, or (`serve`) as `jobgate serve` runs it: the same
    uvicorn and httptools, plus the request-head and connection limits of app/core/server.py.
    With `api_key` the database is already migrated and has that tenant."""
    if api_key is None:
        db_upgrade(env)
        api_key = create_tenant(env, "bench")["api_key"]
    key = api_key
    if serve:
        server = stack.enter_context(ServerProcess(jobgate_argv("serve"), env=env))
    else:
        argv = uvicorn_argv("app.main:create_app", factory=True)
        server = stack.enter_context(ServerProcess(with_port(argv), env=env))
    return Target(label, server, key, [])


def fmt_row(label: str, m: Measurement) -> str:
    return f"{label:<28} {m.rps:>10.1f} {m.p50_ms:>9.2f} {m.p99_ms:>9.2f} {m.errors:>7}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; median kept")
    parser.add_argument(
        "--sync",
        choices=["FULL", "NORMAL", "both"],
        default="FULL",
        help="JOBGATE_SQLITE_SYNCHRONOUS of the SQLite gateway (both: show the fsync cost)",
    )
    parser.add_argument("--generator", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL even if configured")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="also load the SQLite gateway as `jobgate serve` runs it (server limits on)",
    )
    args = parser.parse_args()

    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))
    generator: Generator = wrk_generator(args.wrk_threads) if use_wrk else httpx_generator
    syncs = ["FULL", "NORMAL"] if args.sync == "both" else [args.sync]
    postgres = None if args.no_pg else pg_url()

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jobgate-bench-")))
        bare_env = jobgate_env(f"sqlite:///{tmp / 'unused.db'}")
        bare_argv = uvicorn_argv("bare_app:app", app_dir=BENCH_DIR)
        bare = Target(
            "bare FastAPI",
            stack.enter_context(ServerProcess(with_port(bare_argv), env=bare_env)),
            "unused",
            [],
        )
        targets = [bare]
        for sync in syncs:
            env = gateway_env(f"sqlite:///{tmp / f'gateway-{sync}.db'}", None, sync)
            targets.append(start_gateway(stack, f"gateway SQLite {sync}", env))
            if args.serve:
                env = gateway_env(f"sqlite:///{tmp / f'serve-{sync}.db'}", None, sync)
                targets.append(
                    start_gateway(stack, f"jobgate serve SQLite {sync}", env, serve=True)
                )
        if postgres:
            schema = stack.enter_context(pg_schema(postgres))
            env = gateway_env(postgres, schema, "FULL")
            targets.append(start_gateway(stack, "gateway PostgreSQL", env))

        print(
            f"generator={'wrk -t' + str(args.wrk_threads) if use_wrk else 'httpx'} "
            f"connections={args.connections} duration={args.duration}s warmup={args.warmup}s "
            f"rounds={args.rounds} cpus={os.cpu_count()} python={platform.python_version()}"
        )
        print(f"uvicorn {' '.join(UVICORN_FLAGS)}; body {JOB_BODY}")
        for target in targets:
            generator(target.server.url(PATH), target.api_key, args.warmup, args.connections)
        print(f"\n{'target':<28} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
        for round_no in range(1, args.rounds + 1):
            for target in targets:
                measured = generator(
                    target.server.url(PATH), target.api_key, args.duration, args.connections
                )
                target.results.append(measured)
                suffix = f" #{round_no}" if args.rounds > 1 else ""
                print(fmt_row(target.label + suffix, measured), flush=True)

    print()
    failed = any(m.errors for t in targets for m in t.results)
    for target in targets[1:]:
        ratios = [g.rps / b.rps for g, b in zip(target.results, bare.results, strict=True)]
        detail = f" (rounds: {', '.join(f'{r:.3f}' for r in ratios)})" if len(ratios) > 1 else ""
        print(f"ratio {target.label} / bare FastAPI: {statistics.median(ratios):.3f}{detail}")
    if not use_wrk:
        print("note: the httpx generator may cap the bare app; install wrk for a fair baseline")
    if failed:
        print("ERROR: some requests failed (see the errors column); the figures are not valid")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
