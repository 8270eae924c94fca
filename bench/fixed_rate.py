"""An open-loop, fixed-rate HTTP load generator (what wrk2 does), in its own process.

    python bench/fixed_rate.py URL --rate 500 --duration 10 --connections 32 \
        --body JSON -H "Authorization: Bearer ..."

Request i is due at start + i / rate and goes out on keep-alive connection i mod
`--connections`; its latency runs from when it was *due*, not from when it was sent. A
closed-loop generator (wrk, `httpx_load.py`) only sends when an answer came back, so a server
that stalls for a second is asked less during the stall and its slow second shows up as one
slow request ("coordinated omission"); here every request that should have gone out during
the stall counts the wait. Prints one JSON line: requests, seconds, rate, achieved_rps,
p50_ms, p90_ms, p99_ms, max_ms, errors, late (requests sent over 10 ms after they were due,
because their connection still waited for an earlier answer or the generator fell behind;
the wait counts in their latency either way).

HTTP/1.1 over asyncio streams, not an HTTP library, so one process can offer a few
thousand requests/s; the answers must carry Content-Length (FastAPI's JSON ones do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

LATE_S = 0.010


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def build_request(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return host, port, ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one answer, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep_alive = False
        elif name == "transfer-encoding":
            raise ValueError("chunked answers are not supported")
    if length:
        await reader.readexactly(length)
    return status, keep_alive


async def load(
    url: str,
    *,
    rate: float,
    duration: float,
    connections: int,
    body: bytes,
    headers: dict[str, str],
) -> dict[str, float]:
    host, port, request = build_request(url, body, headers)
    total = max(1, int(rate * duration))
    latencies: list[float] = []
    errors = 0
    late = 0
    start = time.perf_counter() + 0.05  # time to open the connections

    async def connection(first: int) -> None:
        nonlocal errors, late
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        for i in range(first, total, connections):
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            elif -wait > LATE_S:
                late += 1
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                status, keep_alive = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - due)
            if status >= 400:
                errors += 1
            if not keep_alive and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection(j) for j in range(min(connections, total))))
    seconds = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rate": rate,
        "achieved_rps": len(latencies) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] * 1000) if latencies else float("nan"),
        "errors": errors,
        "late": late,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--body", default="{}")
    parser.add_argument("-H", "--header", action="append", default=[])
    args = parser.parse_args()
    if args.rate <= 0:
        parser.error("--rate must be positive")
    headers = dict(h.split(": ", 1) for h in args.header)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # the stock loop works, it only offers less
        run = asyncio.run
    result = run(
        load(
            args.url,
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            body=args.body.encode(),
            headers=headers,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
