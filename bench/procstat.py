"""What a benchmark reads about processes and the machine from /proc (Linux only).

CPU time per request is steadier than requests/s on a shared, noisy machine: other work
slows a server down (fewer requests/s) but barely changes how many CPU seconds each request
costs it. `cpu_seconds` reads a process's user + system time, `rss_bytes` its resident set,
each with what its helper processes add: the SQLite writer a gateway starts works for it.
Other children (the consumer `jobgate dev` starts) are not counted.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# The command line of a gateway's SQLite writer process (app/jobs/sqlite_writer.py) has it.
HELPER_MARK = b"sqlite_write_process"


def with_helpers(pid: int) -> list[int]:
    """`pid` and its live helper processes (children whose command line has HELPER_MARK)."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
            if int(raw[raw.rindex(")") + 2 :].split()[1]) != pid:
                continue
            if HELPER_MARK in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its live helpers (all their threads), or NaN
    once `pid` is gone.

    Fields 14 and 15 of /proc/<pid>/stat; the command name (field 2) may contain spaces, so
    the fields are counted from the closing parenthesis.
    """
    total = 0.0
    for member in with_helpers(pid):
        try:
            raw = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            if member == pid:
                return float("nan")
            continue  # a helper that just exited
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): utime is field 14, stime field 15.
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (VmRSS in /proc/<pid>/status) plus what its live helpers
    add: their private pages (/proc/<pid>/smaps_rollup). The pages a helper shares (the
    interpreter's and SQLite's code, which the gateway maps too) are counted once, in the
    gateway's RSS. 0 once `pid` is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    total = _kib(lines, ("VmRSS:",))
    for helper in with_helpers(pid)[1:]:
        try:
            rollup = Path(f"/proc/{helper}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue  # a helper that just exited
        total += _kib(rollup, ("Private_Clean:", "Private_Dirty:"))
    return total


def _kib(lines: list[str], names: tuple[str, ...]) -> int:
    """The sum of the named `Name:   N kB` lines, in bytes."""
    return sum(int(line.split()[1]) * 1024 for line in lines if line.startswith(names))


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass(frozen=True, slots=True)
class Machine:
    """What every figure of the report states about where it ran."""

    cores: int
    python: str
    system: str
    cpu_model: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> Machine:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return Machine(
        cores=os.cpu_count() or 1,
        python=platform.python_version(),
        system=f"{platform.system()} {platform.release()}",
        cpu_model=model,
    )
