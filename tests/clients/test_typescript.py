"""The TypeScript client (`clients/typescript`): its generated types match `openapi.yaml`
and its node tests pass against a live gateway.

Skipped when node or the client's `node_modules` is missing outside CI; with `CI=true`
(`.ci/run` runs `npm ci` first) a missing toolchain fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from app.core.config import REPO_ROOT
from tests.clients.conftest import LiveGateway

pytestmark = pytest.mark.slow

CLIENT = REPO_ROOT / "clients" / "typescript"
NPM = shutil.which("npm")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if (NPM is None or not (CLIENT / "node_modules").is_dir()) and not IN_CI:
    pytest.skip(
        "npm or clients/typescript/node_modules is missing (run `npm ci` there)",
        allow_module_level=True,
    )


def _npm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert NPM is not None, "CI must have node and npm"
    assert (CLIENT / "node_modules").is_dir(), "CI runs `npm ci` in clients/typescript first"
    return subprocess.run(
        [NPM, *args],
        cwd=CLIENT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_generated_types_match_the_contract() -> None:
    """`openapi-typescript --check`: exit 1 when `src/schema.d.ts` differs from a fresh
    generation (then run `npm run generate` there, or `make openapi`)."""
    done = _npm("run", "check-generated")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not up-to-date" not in done.stdout + done.stderr


def test_node_tests_pass_against_a_live_gateway(live_gateway: LiveGateway) -> None:
    done = _npm("test", env={"JOBGATE_URL": live_gateway.url, "JOBGATE_KEY": live_gateway.key})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "# fail 0" in done.stdout
    assert "# pass 6" in done.stdout


def test_the_readme_example_type_checks() -> None:
    """The README's "Integrating from TypeScript" snippet compiles against the client."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Integrating from TypeScript", 1)[1]
    snippet = section.split("```ts\n", 1)[1].split("```", 1)[0]
    assert '"@jobgate/client"' in snippet
    example = CLIENT / "dist" / "readme-example.ts"
    example.parent.mkdir(exist_ok=True)
    example.write_text(snippet.replace('"@jobgate/client"', '"../src/index.js"'))
    done = _npm(
        "exec",
        "--",
        "tsc",
        "--noEmit",
        "--strict",
        "--target",
        "ES2022",
        "--module",
        "NodeNext",
        "--moduleResolution",
        "NodeNext",
        "--types",
        "node",
        str(example.relative_to(CLIENT)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
