"""Another process's view of, and hold on, a SQLite file's writers' turn (`WriterLock`):
the flock on `<database>-writers`, probed and held from a child process so that the
process under test sees a real competitor."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

_SCRIPT = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
if sys.argv[2] == "try":
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("held")
else:  # hold the turn for a while, as another process's write transaction would
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("holding", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def other_process_sees(lock_file: Path) -> str:
    """'held' while a process (this one included) has the turn, 'free' otherwise."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(lock_file), "try"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


@asynccontextmanager
async def held_by_another_process(
    lock_file: Path, seconds: float
) -> AsyncIterator[subprocess.Popen[str]]:
    """A child process that holds the turn for `seconds` (from when this enters), then exits."""
    lock_file.touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(lock_file), "hold", str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "holding\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
