"""Schemathesis's CLI against a live server, and the verdict every contract run shares."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from app.core.config import REPO_ROOT

_OUTPUT_TAIL = 20_000


def assert_schemathesis_clean(
    config: Path,
    schema: str,
    *selection: str,
    token: str,
    max_examples: str,
    timeout_s: float,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    """Run `schemathesis run SCHEMA` with `config` (one worker, bounded examples, a bearer
    token) and assert it passed with no failure. `selection` adds CLI options (the base URL,
    which paths or methods)."""
    script = Path(sys.executable).with_name("schemathesis")
    assert script.exists(), "schemathesis is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run(
        [
            str(script),
            "--config-file",
            str(config),
            "run",
            schema,
            "--header",
            f"Authorization: Bearer {token}",
            *selection,
            "--max-examples",
            max_examples,
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
        env={**os.environ, **(extra_env or {})},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-_OUTPUT_TAIL:]
    assert "Failures:" not in output, output[-_OUTPUT_TAIL:]
    assert " passed" in output, output[-_OUTPUT_TAIL:]
