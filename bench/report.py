"""Turn the raw figures of `bench/suite.py` into `REPORT.md` and its PNG plots.

    .venv/bin/python -m bench.report [bench/results/raw/results.json] [--out bench/results]

Every figure is a median over the run's rounds; every ratio is taken round by round (target
and baseline loaded back to back) and then the median of those ratios is kept. Plots use
matplotlib's Agg backend (no display needed) and state the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Row = dict[str, Any]

# The goals of issue 13, checked by `goals`.
ACCEPT_RATIO_GOAL = 0.6
BATCH_GOAL = 25_000.0
E2E_GOAL = 5_000.0
E2E_CELERY_RATIO_GOAL = 2.0
ANALYTICS_GOAL = 5_000.0
P99_GOAL_MS = 10.0
RSS_GOAL_MB = 150.0
ACCEPT_RATIO_CONNECTIONS = 32  # the peers were measured with wrk -c32

FIGURES = {
    "accept": "accept.png",
    "batch": "batch.png",
    "e2e": "e2e_noop.png",
    "analytics": "e2e_analytics.png",
    "rss": "rss.png",
}


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(kept) if kept else None


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def yes_no(met: bool | None) -> str:
    return "n/a" if met is None else ("**yes**" if met else "no")


def targets(rows: list[Row]) -> list[str]:
    """Target labels in order of first appearance."""
    return list(dict.fromkeys(r["target"] for r in rows))


def pick(rows: list[Row], **where: Any) -> list[Row]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def round_ratios(
    rows: list[Row], target: str, baseline: str, value: Callable[[Row], float | None], **where: Any
) -> list[float]:
    """value(target) / value(baseline), paired round by round."""
    base = {r["round"]: value(r) for r in pick(rows, target=baseline, **where)}
    ratios = []
    for r in pick(rows, target=target, **where):
        b, v = base.get(r["round"]), value(r)
        if b and v is not None:
            ratios.append(v / b)
    return ratios


# -- the machine line ------------------------------------------------------------------------


def machine_line(data: Row, section: str | None = None) -> str:
    meta = data["meta"]
    m = meta["machine"]
    sec = data.get("sections", {}).get(section or "", {})
    load_start = sec.get("load_start") or meta.get("load_start") or [float("nan")] * 3
    load_end = sec.get("load_end") or meta.get("load_end") or [float("nan")] * 3
    rounds = meta["plan"]["rounds"]
    return (
        f"{m['cores']} cores, load {load_start[0]:.2f} -> {load_end[0]:.2f}, "
        f"Python {m['python']}, DB {' + '.join(meta['databases'])}, {meta['generator']}, "
        f"{meta['mode']} run, median of {rounds} round{'s' if rounds != 1 else ''}, "
        f"{meta['started'][:16].replace('T', ' ')} UTC"
    )


def stamp(fig: Any, data: Row, section: str) -> None:
    fig.text(0.01, 0.005, machine_line(data, section), fontsize=7, color="#555555")


# -- goals -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    goal: str
    measured: str
    met: bool | None


def accept_connections(data: Row) -> int | None:
    measured = sorted({r["connections"] for r in data["accept"]})
    if not measured:
        return None
    below = [c for c in measured if c <= ACCEPT_RATIO_CONNECTIONS]
    return below[-1] if below else measured[0]


def goals(data: Row) -> list[Goal]:
    out: list[Goal] = []
    dbs: list[str] = data["meta"]["databases"]
    accept = data["accept"]
    conns = accept_connections(data)
    for db in dbs:
        label = f"jobgate {db}"
        if conns is not None and pick(accept, target=label):
            ratio = median(
                round_ratios(accept, label, "bare FastAPI", lambda r: r["rps"], connections=conns)
            )
            g = median(r["rps"] for r in pick(accept, target=label, connections=conns))
            b = median(r["rps"] for r in pick(accept, target="bare FastAPI", connections=conns))
            out.append(
                Goal(
                    f"single-job accept, req/s ratio to bare FastAPI (-c{conns}), {db}",
                    f">= {ACCEPT_RATIO_GOAL}",
                    f"{fmt(ratio, 3)} ({fmt(g)} vs {fmt(b)} req/s)",
                    None if ratio is None else ratio >= ACCEPT_RATIO_GOAL,
                )
            )
            # CPU per request: bare / jobgate, the ratio a CPU-bound server would reach.
            cpu = median(
                round_ratios(
                    accept, "bare FastAPI", label, lambda r: r["cpu_us_per_req"], connections=conns
                )
            )
            gc = median(r["cpu_us_per_req"] for r in pick(accept, target=label, connections=conns))
            bc = median(
                r["cpu_us_per_req"] for r in pick(accept, target="bare FastAPI", connections=conns)
            )
            out.append(
                Goal(
                    f"single-job accept, server CPU per request ratio (bare / jobgate), {db}",
                    f">= {ACCEPT_RATIO_GOAL}",
                    f"{fmt(cpu, 3)} ({fmt(bc)} vs {fmt(gc)} µs/request)",
                    None if cpu is None else cpu >= ACCEPT_RATIO_GOAL,
                )
            )
        batch = data["batch"]
        if pick(batch, target=label):
            size = max(r["batch"] for r in batch)
            rate = median(r["jobs_per_s"] for r in pick(batch, target=label, batch=size))
            out.append(
                Goal(
                    f"batch ingest, {size} jobs per request, {db}",
                    f">= {BATCH_GOAL:,.0f} jobs/s",
                    f"{fmt(rate)} jobs/s",
                    None if rate is None else rate >= BATCH_GOAL,
                )
            )
        e2e = data["e2e"]
        if pick(e2e, target=label):
            seconds = data["meta"]["plan"]["e2e_s"]
            rate = median(r["sustained_jobs_per_s"] for r in pick(e2e, target=label))
            out.append(
                Goal(
                    f"end to end, no-op handlers, sustained {seconds:.0f} s, {db}",
                    f">= {E2E_GOAL:,.0f} jobs/s",
                    f"{fmt(rate)} jobs/s",
                    None if rate is None else rate >= E2E_GOAL,
                )
            )
            celery = median(r["sustained_jobs_per_s"] for r in pick(e2e, target="FastAPI + Celery"))
            ratio = median(
                round_ratios(e2e, label, "FastAPI + Celery", lambda r: r["sustained_jobs_per_s"])
            )
            out.append(
                Goal(
                    f"end to end, ratio to FastAPI + Celery + Redis (same run), {db}",
                    f">= {E2E_CELERY_RATIO_GOAL:.0f}x",
                    f"{fmt(ratio, 2)}x ({fmt(rate)} vs {fmt(celery)} jobs/s)",
                    None if ratio is None else ratio >= E2E_CELERY_RATIO_GOAL,
                )
            )
        dev = pick(data["analytics"], target=f"jobgate dev {db}")
        if dev:
            jobs = max(r["jobs"] for r in dev)
            drained = all(r["drained"] for r in dev)
            rate = median(r["jobs_per_s"] for r in dev)
            if drained:
                took = fmt(median(r["all_done_s"] for r in dev), 1)
                measured = f"{fmt(rate)} jobs/s ({jobs:,} jobs in {took} s)"
            else:
                done = min(r["done"] for r in dev)
                measured = (
                    f"{fmt(rate)} jobs/s so far: not drained, {done:,} of {jobs:,} jobs done "
                    "when the timeout hit"
                )
            out.append(
                Goal(
                    f"end to end, real `analytics-event` handler, `jobgate dev`, {db}",
                    f">= {ANALYTICS_GOAL:,.0f} jobs/s",
                    measured,
                    (rate is not None and rate >= ANALYTICS_GOAL) if drained else False,
                )
            )
        fixed = pick(data["fixed_rate"], target=label)
        if fixed:
            p99 = median(r["p99_ms"] for r in fixed)
            rate = median(r["rate"] for r in fixed)
            out.append(
                Goal(
                    f"accept p99 at half the maximum rate (open loop), {db}",
                    f"<= {P99_GOAL_MS:.0f} ms",
                    f"{fmt(p99, 1)} ms at {fmt(rate)} req/s",
                    None if p99 is None else p99 <= P99_GOAL_MS,
                )
            )
        rss = [r["rss_mb"] for r in data["rss"] if db in r["label"]]
        if rss:
            out.append(
                Goal(
                    f"gateway RSS under load (max of all samples), {db}",
                    f"<= {RSS_GOAL_MB:.0f} MB",
                    f"{max(rss):.0f} MB",
                    max(rss) <= RSS_GOAL_MB,
                )
            )
    return out


def goals_markdown(data: Row) -> str:
    lines = ["| goal | target | measured | met |", "|---|---|---|---|"]
    for g in goals(data):
        lines.append(f"| {g.name} | {g.goal} | {g.measured} | {yes_no(g.met)} |")
    celery = median(
        round_ratios(
            data["accept"],
            "FastAPI + Celery",
            "bare FastAPI",
            lambda r: r["rps"],
            connections=accept_connections(data),
        )
    )
    if celery is not None:
        lines.append(
            f"| (reference) FastAPI + Celery `apply_async` accept, ratio to bare "
            f"(-c{accept_connections(data)}) | | {fmt(celery, 3)} | |"
        )
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------------


def plot_accept(data: Row, path: Path) -> None:
    rows = data["accept"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for label in targets(rows):
        conns = sorted({r["connections"] for r in pick(rows, target=label)})

        def med(key: str, label: str = label, conns: list[int] = conns) -> list[float]:
            return [
                median(r[key] for r in pick(rows, target=label, connections=c)) or math.nan
                for c in conns
            ]

        (line,) = axes[0].plot(conns, med("rps"), marker="o", label=label)
        axes[1].plot(conns, med("p99_ms"), marker="o", color=line.get_color(), label=f"{label} p99")
        axes[1].plot(
            conns, med("p50_ms"), marker=".", ls="--", color=line.get_color(), label=f"{label} p50"
        )
        axes[2].plot(conns, med("cpu_us_per_req"), marker="o", color=line.get_color(), label=label)
    titles = ["requests/s", "latency (ms): p99 solid, p50 dashed", "server CPU per request (µs)"]
    ticks = sorted({r["connections"] for r in rows})
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.set_xlabel("concurrent connections")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("Single-job accept: POST /v1/jobs, closed loop")
    stamp(fig, data, "accept")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_batch(data: Row, path: Path) -> None:
    rows = data["batch"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for label in targets(rows):
        sizes = sorted({r["batch"] for r in pick(rows, target=label)})
        rate = [
            median(r["jobs_per_s"] for r in pick(rows, target=label, batch=s)) or math.nan
            for s in sizes
        ]
        cpu = [
            median(r["cpu_us_per_job"] for r in pick(rows, target=label, batch=s)) or math.nan
            for s in sizes
        ]
        (line,) = axes[0].plot(sizes, rate, marker="o", label=label)
        axes[1].plot(sizes, cpu, marker="o", color=line.get_color(), label=label)
    axes[0].axhline(BATCH_GOAL, color="red", ls=":", lw=1, label=f"goal {BATCH_GOAL:,.0f} jobs/s")
    axes[0].set_title("jobs/s (log scale)", fontsize=10)
    axes[1].set_title("server CPU per job (µs)", fontsize=10)
    sizes = sorted({r["batch"] for r in rows})
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(size) for size in sizes])
        ax.set_xlabel("jobs per request (POST /v1/jobs/batch)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Batch ingest, {data['meta']['plan']['batch_connections']} connections, closed loop"
    )
    stamp(fig, data, "batch")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def representative(rows: list[Row], key: str) -> Row:
    """The round whose `key` is the median (the one plotted)."""
    ranked = sorted(rows, key=lambda r: r[key] if r[key] is not None else -1.0)
    return ranked[(len(ranked) - 1) // 2]


def completion_rate(series: Row) -> tuple[list[float], list[float]]:
    """Jobs done per second between samples, smoothed over about one second."""
    t, done = series["t"], series["done"]
    times, rates = [], []
    for i in range(1, len(t)):
        j = max(0, i - 4)
        if t[i] > t[j]:
            times.append(t[i])
            rates.append((done[i] - done[j]) / (t[i] - t[j]))
    return times, rates


def plot_timeline(data: Row, kind: str, path: Path, title: str, goal: float) -> None:
    rows = data[kind]
    labels = targets(rows)
    fig, axes = plt.subplots(len(labels), 1, figsize=(11, 3.2 * len(labels)), squeeze=False)
    key = "sustained_jobs_per_s" if kind == "e2e" else "jobs_per_s"
    for ax, label in zip(axes[:, 0], labels, strict=True):
        run = representative(pick(rows, target=label), key)
        t, rate = completion_rate(run["series"])
        ax.plot(t, rate, color="tab:blue", label="jobs done/s")
        if max(rate, default=0.0) >= goal / 2:  # else the goal line would flatten the curve
            ax.axhline(goal, color="red", ls=":", lw=1, label=f"goal {goal:,.0f} jobs/s")
        if run.get("load_s"):
            ax.axvline(run["load_s"], color="grey", ls="--", lw=1, label="load stops")
        ax.set_ylabel("jobs done/s")
        ax.set_xlabel("seconds since the first submit")
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.plot(run["series"]["t"], run["series"]["backlog"], color="tab:orange", label="backlog")
        twin.set_ylabel("backlog (jobs)", color="tab:orange")
        ax.set_ylim(bottom=0)
        twin.set_ylim(bottom=0)
        value = run[key]
        drained = "" if run["drained"] else ", not drained in time"
        ax.set_title(
            f"{label}, round {run['round']}: {fmt(value)} jobs/s (goal {goal:,.0f}){drained}",
            fontsize=10,
        )
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=8, loc="upper right")
    fig.suptitle(title)
    stamp(fig, data, kind)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_rss(data: Row, path: Path) -> None:
    rows = data["rss"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        ax.plot([r["t"] for r in mine], [r["rss_mb"] for r in mine], label=label)
    for i, (name, sec) in enumerate(data.get("sections", {}).items()):
        if "t_end" in sec:
            ax.axvspan(sec["t_start"], sec["t_end"], alpha=0.06, color="grey")
            ax.text(
                sec["t_start"],
                0.98 - 0.05 * (i % 2),  # short sections side by side: stagger their names
                name,
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                va="top",
            )
    ax.axhline(RSS_GOAL_MB, color="red", ls=":", lw=1, label=f"goal {RSS_GOAL_MB:.0f} MB")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("RSS (MB, VmRSS + the SQLite writer's private)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Gateway memory over the run")
    stamp(fig, data, "")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the report ------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def med(rows: list[Row], key: str, digits: int = 0) -> str:
    return fmt(median(r[key] for r in rows), digits)


def errors(rows: list[Row]) -> str:
    return str(sum(r["errors"] for r in rows))


def accept_table(data: Row) -> str:
    rows = data["accept"]
    out = []
    for label in targets(rows):
        for c in sorted({r["connections"] for r in pick(rows, target=label)}):
            mine = pick(rows, target=label, connections=c)
            ratio = median(
                round_ratios(rows, label, "bare FastAPI", lambda r: r["rps"], connections=c)
            )
            shown = "1" if label == "bare FastAPI" else fmt(ratio, 3)
            out.append(
                [label, str(c), med(mine, "rps"), med(mine, "p50_ms", 1), med(mine, "p99_ms", 1)]
                + [med(mine, "cpu_us_per_req"), shown, errors(mine)]
            )
    header = ["target", "conns", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "ratio to bare"]
    return table([*header, "errors"], out)


def fixed_rate_table(data: Row) -> str:
    rows = data["fixed_rate"]
    out = []
    for label in targets(rows):
        mine = pick(rows, target=label)
        out.append(
            [label, med(mine, "max_rps"), med(mine, "rate"), med(mine, "achieved_rps")]
            + [med(mine, "p50_ms", 1), med(mine, "p99_ms", 1), med(mine, "max_ms", 1)]
            + [str(sum(r["late"] for r in mine)), errors(mine)]
        )
    header = ["target", "best closed-loop req/s", "asked req/s", "achieved req/s", "p50 ms"]
    return table([*header, "p99 ms", "max ms", "sent late", "errors"], out)


def batch_table(data: Row) -> str:
    rows = data["batch"]
    out = []
    for label in targets(rows):
        for size in sorted({r["batch"] for r in pick(rows, target=label)}):
            mine = pick(rows, target=label, batch=size)
            out.append(
                [label, str(size), med(mine, "jobs_per_s"), med(mine, "rps")]
                + [med(mine, "p99_ms", 1), med(mine, "cpu_us_per_job", 1), errors(mine)]
            )
    header = ["target", "jobs/request", "jobs/s", "requests/s", "p99 ms", "CPU µs/job"]
    return table([*header, "errors"], out)


def e2e_table(data: Row, kind: str) -> str:
    """One row per round; `sustained` only for the timed (no-op) runs."""
    timed = kind == "e2e"
    out = []
    for label in targets(data[kind]):
        for r in pick(data[kind], target=label):
            row = [label, str(r["round"]), f"{r['jobs']:,}", fmt(r["load_s"], 1)]
            if timed:
                row.append(fmt(r["sustained_jobs_per_s"]))
            row += [fmt(r["all_done_s"], 1) if r["drained"] else "not drained"]
            row += [fmt(r["jobs_per_s"]), f"{max(r['series']['backlog'], default=0):,}"]
            out.append([*row, str(r["errors"])])
    header = ["target", "round", "jobs", "submitted in (s)"]
    if timed:
        header.append("sustained jobs/s (load window)")
    return table([*header, "all done (s)", "jobs/s overall", "max backlog", "errors"], out)


def rss_table(data: Row) -> str:
    out = []
    for label in dict.fromkeys(r["label"] for r in data["rss"]):
        mine = [r for r in data["rss"] if r["label"] == label]
        sections = ", ".join(dict.fromkeys(r["section"] for r in mine))
        out.append([label, sections, str(len(mine)), med(mine, "rss_mb"), med(mine[-1:], "rss_mb")])
        out[-1].append(fmt(max(r["rss_mb"] for r in mine)))
    return table(["process", "sections", "samples", "median MB", "last MB", "max MB"], out)


def write_report(data: Row, out_dir: Path) -> Path:
    """Write REPORT.md and the PNGs of the sections that have figures; return REPORT.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = data["meta"]
    plan = meta["plan"]
    command = "make bench" if meta["mode"] == "full" else "make bench-quick"
    machine = meta["machine"]
    started = meta["started"].replace("T", " ")
    finished = meta.get("finished", "?").replace("T", " ")
    load_start = " / ".join(f"{x:.2f}" for x in meta["load_start"])
    load_end = " / ".join(f"{x:.2f}" for x in meta.get("load_end", meta["load_start"]))
    parts = [
        "# jobgate benchmark report",
        "",
        f"`{command}`, {started} to {finished}. "
        f"Machine: {machine['cores']} cores ({machine['cpu_model'] or 'unknown CPU'}), "
        f"{machine['system']}, Python {machine['python']}; load average "
        f"{load_start} at the start, {load_end} at the end (1/5/15 min). "
        f"Databases: {', '.join(meta['databases'])}. Load generator: {meta['generator']}. "
        f"Figures are medians of {plan['rounds']} round(s), targets alternating; ratios are "
        "taken round by round against a baseline loaded back to back. See `bench/README.md` "
        "for what each benchmark does and how to read it.",
    ]
    for note in meta.get("notes", []):
        parts += ["", f"> note: {note}"]
    parts += ["", "## Goals (issue 13)", "", goals_markdown(data)]
    if data["accept"]:
        plot_accept(data, out_dir / FIGURES["accept"])
        parts += [
            "",
            "## Single-job accept",
            "",
            f"`POST /v1/jobs`, {plan['accept_s']:.0f} s per target, concurrency and round; CPU is "
            "the server process's user + system time from `/proc/<pid>/stat` (with its SQLite "
            "writer process) divided by the requests it answered (Redis's own CPU is not in the "
            "Celery figure).",
            "",
            accept_table(data),
            "",
            f"![accept]({FIGURES['accept']})",
        ]
    if data["fixed_rate"]:
        parts += [
            "",
            "### p99 at half the maximum rate (open loop)",
            "",
            f"`bench/fixed_rate.py`: requests due at a fixed rate (half the target's best "
            f"closed-loop req/s above) on {plan['fixed_rate_connections']} connections for "
            f"{plan['fixed_rate_s']:.0f} s; latency counts from when a request was due, so a "
            "stall is not hidden. 'sent late' counts requests that went out over 10 ms after "
            "they were due (their connection still waited for an answer, or the generator fell "
            "behind); achieved well below asked means the server did not keep up with half its "
            "own best rate during this run.",
            "",
            fixed_rate_table(data),
        ]
    if data["batch"]:
        plot_batch(data, out_dir / FIGURES["batch"])
        parts += [
            "",
            "## Batch ingest",
            "",
            f"`POST /v1/jobs/batch` (`/jobs/batch` for Celery) with N `analytics-event` jobs "
            f"per request, {plan['batch_connections']} connections, {plan['batch_s']:.0f} s each.",
            "",
            batch_table(data),
            "",
            f"![batch]({FIGURES['batch']})",
        ]
    if data["e2e"]:
        plot_timeline(
            data,
            "e2e",
            out_dir / FIGURES["e2e"],
            "End to end, no-op handlers: jobs done/s and backlog",
            E2E_GOAL,
        )
        parts += [
            "",
            "## End to end, no-op handlers",
            "",
            f"Batches of 100 from 4 clients for {plan['e2e_s']:.0f} s (paused while more than "
            f"{plan['e2e_max_backlog']:,} jobs are unfinished), then the drain. Sustained = jobs "
            "done within the load window / its length; jobgate: `jobgate serve` + `jobgate "
            "consume`, local engine; Celery: a threads x10 worker on Redis, Celery's defaults.",
            "",
            e2e_table(data, "e2e"),
            "",
            f"![e2e]({FIGURES['e2e']})",
        ]
    if data["analytics"]:
        plot_timeline(
            data,
            "analytics",
            out_dir / FIGURES["analytics"],
            "`jobgate dev` as shipped, real analytics-event handler",
            ANALYTICS_GOAL,
        )
        parts += [
            "",
            "## End to end, `analytics-event` with `jobgate dev`",
            "",
            f"`jobgate dev` as shipped (its topology, handlers and batch sizes; admission limits "
            f"raised), {plan['analytics_jobs']:,} jobs sent in batches of 100 from 4 clients; "
            "jobs/s = jobs / time until the last one succeeded.",
            "",
            e2e_table(data, "analytics"),
            "",
            f"![analytics]({FIGURES['analytics']})",
        ]
    if data["rss"]:
        plot_rss(data, out_dir / FIGURES["rss"])
        parts += [
            "",
            "## Gateway memory",
            "",
            "RSS of each gateway process sampled every 0.5 s from `/proc/<pid>/status`.",
            "",
            rss_table(data),
            "",
            f"![rss]({FIGURES['rss']})",
        ]
    report = out_dir / "REPORT.md"
    report.write_text("\n".join(parts) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(__file__).resolve().parent / "results"
    parser.add_argument(
        "results", nargs="?", type=Path, default=default_out / "raw" / "results.json"
    )
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    print(write_report(json.loads(args.results.read_text()), args.out))


if __name__ == "__main__":
    main()
