"""The benchmark report generator (bench/report.py) on a tiny synthetic result set.

`make bench` takes minutes and is never run by the suite; this keeps the code that turns its
figures into REPORT.md and the PNG plots from rotting. Nothing here is timed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.report import FIGURES, Goal, goals, goals_markdown, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _series(rate: float, seconds: float, backlog: int) -> dict[str, list[float]]:
    t = [0.25 * i for i in range(1, int(seconds * 4) + 1)]
    done = [rate * x for x in t]
    return {
        "t": t,
        "done": done,
        "accepted": [d + backlog for d in done],
        "backlog": [backlog] * len(t),
        "rss_mb": [100.0] * len(t),
    }


def _e2e(target: str, kind: str, db: str | None, rnd: int, rate: float) -> dict[str, Any]:
    series = _series(rate, 4.0, 50)
    return {
        "target": target,
        "kind": kind,
        "db": db,
        "round": rnd,
        "jobs": int(series["done"][-1]),
        "errors": 0,
        "load_s": 3.0,
        "all_done_s": 4.0,
        "drained": True,
        "done": int(series["done"][-1]),
        "sustained_jobs_per_s": rate,
        "jobs_per_s": rate,
        "series": series,
    }


def synthetic_results() -> dict[str, Any]:
    """Two rounds on SQLite; jobgate meets some goals and misses others, by construction."""
    accept, fixed, batch, e2e, analytics = [], [], [], [], []
    servers = [
        ("bare FastAPI", "bare", None, 1000.0, 100.0),
        ("FastAPI + Celery", "celery", None, 200.0, 900.0),
        ("jobgate SQLite", "jobgate", "SQLite", 700.0, 140.0),  # ratio 0.7: met
    ]
    for rnd in (1, 2):
        for target, kind, db, rps, cpu in servers:
            for conns in (1, 8, 32):
                accept.append(
                    {
                        "target": target,
                        "kind": kind,
                        "db": db,
                        "round": rnd,
                        "connections": conns,
                        "rps": rps * (1 + conns / 64),
                        "p50_ms": 1.0 + conns / 10,
                        "p99_ms": 5.0 + conns,
                        "requests": int(rps * 2),
                        "errors": 0,
                        "cpu_us_per_req": cpu,
                    }
                )
            for size in (1, 100):
                batch.append(
                    {
                        "target": target,
                        "kind": kind,
                        "db": db,
                        "round": rnd,
                        "batch": size,
                        "rps": rps / 10,
                        "jobs_per_s": rps / 10 * size,  # jobgate: 7,000 jobs/s, goal missed
                        "p50_ms": 3.0,
                        "p99_ms": 9.0,
                        "errors": 0,
                        "cpu_us_per_job": cpu / size,
                    }
                )
            if kind != "celery":
                fixed.append(
                    {
                        "target": target,
                        "kind": kind,
                        "db": db,
                        "round": rnd,
                        "max_rps": rps,
                        "rate": rps / 2,
                        "achieved_rps": rps / 2,
                        "requests": int(rps),
                        "seconds": 2.0,
                        "p50_ms": 1.0,
                        "p90_ms": 2.0,
                        "p99_ms": 4.0,  # goal met
                        "max_ms": 8.0,
                        "errors": 0,
                        "late": 0,
                    }
                )
        e2e.append(_e2e("jobgate SQLite", "jobgate", "SQLite", rnd, 6000.0))
        e2e.append(_e2e("FastAPI + Celery", "celery", None, rnd, 2000.0))  # ratio 3x: met
        analytics.append(_e2e("jobgate dev SQLite", "jobgate", "SQLite", rnd, 150.0))
    rss = [
        {
            "t": 0.5 * i,
            "label": "jobgate SQLite (accept, batch)",
            "section": "accept",
            "rss_mb": 110.0 + i,
        }
        for i in range(10)
    ]
    plan = {
        "mode": "quick",
        "rounds": 2,
        "connections": [1, 8, 32],
        "accept_s": 2.0,
        "warmup_s": 1.0,
        "fixed_rate_s": 2.0,
        "fixed_rate_connections": 32,
        "batch_sizes": [1, 100],
        "batch_connections": 8,
        "batch_s": 2.0,
        "e2e_s": 3.0,
        "e2e_max_backlog": 3000,
        "e2e_drain_timeout_s": 10.0,
        "analytics_jobs": 600,
        "analytics_timeout_s": 10.0,
        "postgres": False,
    }
    sections = {
        name: {
            "load_start": [1.0, 1.0, 1.0],
            "load_end": [1.5, 1.2, 1.1],
            "t_start": i,
            "t_end": i + 1,
        }
        for i, name in enumerate(["accept", "fixed_rate", "batch", "e2e", "analytics"])
    }
    return {
        "meta": {
            "mode": "quick",
            "plan": plan,
            "generator": "wrk",
            "databases": ["SQLite"],
            "machine": {"cores": 2, "python": "3.11.7", "system": "Linux", "cpu_model": "test"},
            "started": "2026-12-01T04:00:00+00:00",
            "finished": "2026-12-01T04:01:30+00:00",
            "load_start": [1.0, 1.0, 1.0],
            "load_end": [1.5, 1.2, 1.1],
            "notes": ["synthetic figures"],
        },
        "sections": sections,
        "accept": accept,
        "fixed_rate": fixed,
        "batch": batch,
        "e2e": e2e,
        "analytics": analytics,
        "rss": rss,
    }


def _goal(name_part: str) -> Goal:
    (found,) = [g for g in goals(synthetic_results()) if name_part in g.name]
    return found


def test_goals_are_judged_from_medians_of_round_ratios() -> None:
    accept = _goal("req/s ratio to bare FastAPI")
    assert accept.met is True  # 700 / 1000 in both rounds
    assert accept.measured.startswith("0.700")
    cpu = _goal("CPU per request ratio")
    assert cpu.met is True  # 100 µs bare / 140 µs jobgate
    assert cpu.measured.startswith("0.714")
    assert _goal("batch ingest").met is False  # 7,000 < 25,000 jobs/s
    assert _goal("p99 at half the maximum rate").met is True  # 4 ms
    assert _goal("gateway RSS").met is True  # 119 MB
    assert _goal("no-op handlers, sustained").met is True  # 6,000 jobs/s
    e2e_ratio = _goal("ratio to FastAPI + Celery")
    assert e2e_ratio.met is True
    assert e2e_ratio.measured.startswith("3.00x")
    dev = _goal("jobgate dev")
    assert dev.met is False
    assert dev.measured.startswith("150 jobs/s")


def test_report_writes_the_goals_table_and_every_plot(tmp_path: Path) -> None:
    report = write_report(synthetic_results(), tmp_path)

    text = report.read_text()
    assert report == tmp_path / "REPORT.md"
    assert "| goal | target | measured | met |" in text
    assert (
        "| single-job accept, req/s ratio to bare FastAPI (-c32), SQLite | >= 0.6 | 0.700" in text
    )
    assert (
        "| batch ingest, 100 jobs per request, SQLite | >= 25,000 jobs/s | 7,000 jobs/s | no |"
        in text
    )
    assert "synthetic figures" in text  # notes are carried into the report
    assert "2 cores" in text
    assert "Python 3.11.7" in text
    for name in FIGURES.values():
        png = tmp_path / name
        assert png.read_bytes()[:8] == PNG_SIGNATURE, name
        assert f"]({name})" in text


def test_missing_sections_and_failed_drains_still_make_a_report(tmp_path: Path) -> None:
    data = synthetic_results()
    data["accept"] = []
    data["fixed_rate"] = []
    for row in data["analytics"]:
        row["drained"] = False
        row["all_done_s"] = None
    write_report(data, tmp_path)

    text = (tmp_path / "REPORT.md").read_text()
    assert "not drained" in text
    assert "single-job accept" not in goals_markdown(data)
    assert not (tmp_path / FIGURES["accept"]).exists()
    assert (tmp_path / FIGURES["batch"]).exists()
    assert not math.isnan(max(r["rss_mb"] for r in data["rss"]))
