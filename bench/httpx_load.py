"""A closed-loop HTTP load generator on httpx, used when `wrk` is not installed.

Run as its own process (so it does not share a core's event loop with the runner):
`python bench/httpx_load.py URL --duration 10 --connections 16 --body JSON -H "K: V"`.
Prints one JSON line: {"requests", "seconds", "p50_ms", "p99_ms", "errors"}. One Python
process tops out at a few thousand requests/s, so a fast server is under-measured: prefer wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


async def _load(
    url: str, *, duration: float, connections: int, body: bytes, headers: dict[str, str]
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while (start := time.perf_counter()) < deadline:
            try:
                response = await http.post(url, content=body, headers=headers)
            except httpx.TransportError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            if response.status_code >= 400:
                errors += 1

    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(connections)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--body", default="{}")
    parser.add_argument("-H", "--header", action="append", default=[])
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    result = asyncio.run(
        _load(
            args.url,
            duration=args.duration,
            connections=args.connections,
            body=args.body.encode(),
            headers=headers,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
