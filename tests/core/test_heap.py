"""The garbage collector of the long-running processes: startup frozen, fewer collections."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.core import server
from app.core.config import HttpSettings
from app.core.heap import GC_THRESHOLDS


def test_settle_heap_freezes_startup_and_collects_less_often() -> None:
    script = (
        "import gc, json\n"
        "from app.core.heap import settle_heap\n"
        "before = gc.get_threshold()\n"
        "settle_heap()\n"
        "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    before, after, frozen = json.loads(done.stdout)
    assert tuple(after) == GC_THRESHOLDS
    assert after[0] > before[0]
    assert frozen > 1_000  # the modules, classes and functions startup made


def test_the_server_settles_its_heap_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(server, "settle_heap", lambda: calls.append("settle"))
    monkeypatch.setattr(server.uvicorn, "run", lambda *a, **k: calls.append("serve"))
    server.run("app.main:create_app", HttpSettings())
    assert calls == ["settle", "serve"]


def test_the_consumer_settles_its_heap_before_it_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvloop

    from app.cli import cli
    from app.cli import server as cli_server
    from app.core import heap

    calls: list[str] = []

    def run(coroutine: Any) -> None:
        coroutine.close()  # not run: only the order matters here
        calls.append("run")

    monkeypatch.setattr(heap, "settle_heap", lambda: calls.append("settle"))
    monkeypatch.setattr(uvloop, "run", run)
    monkeypatch.setattr(cli_server, "_observe", lambda *a, **k: None)  # this process's logging
    env = {"JOBGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    done = CliRunner().invoke(cli, ["consume", "--dev"], env=env)
    assert done.exit_code == 0, done.output
    assert calls == ["settle", "run"]
