"""What a benchmark reads about processes and the machine from /proc (Linux only).

CPU time per request is steadier than requests/s on a shared, noisy machine: other work
slows a server down (fewer requests/s) but barely changes how many CPU seconds each request
costs it. `cpu_seconds` reads a process's user + system time, `rss_bytes` its resident set.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` (all its threads; not its children), or NaN once gone.

    Fields 14 and 15 of /proc/<pid>/stat; the command name (field 2) may contain spaces, so
    the fields are counted from the closing parenthesis.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (VmRSS in /proc/<pid>/status), 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


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
