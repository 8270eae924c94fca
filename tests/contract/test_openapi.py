"""The committed openapi.yaml is the contract: any drift from the app fails here."""

from __future__ import annotations

import subprocess
import sys

import yaml

from app.bootstrap import Runtime
from app.core.config import REPO_ROOT
from app.core.openapi import openapi_yaml
from app.main import create_app


def test_openapi_yaml_matches_the_app(runtime: Runtime) -> None:
    committed = (REPO_ROOT / "openapi.yaml").read_text(encoding="utf-8")
    generated = openapi_yaml(create_app(runtime=runtime))
    assert yaml.safe_load(generated) == yaml.safe_load(committed), (
        "openapi.yaml is stale: run `make openapi` and commit it"
    )
    assert generated == committed


def test_cli_prints_the_same_document() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "app", "openapi"],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    ).stdout
    assert printed == (REPO_ROOT / "openapi.yaml").read_text(encoding="utf-8")


def test_operations_declare_ids_tags_and_problem_responses() -> None:
    document = yaml.safe_load((REPO_ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    operations = [operation for path in document["paths"].values() for operation in path.values()]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids))
    assert all("-" in op_id for op_id in ids)
    submit = document["paths"]["/v1/jobs"]["post"]
    for status in ("202", "200", "400", "401", "403", "409", "413", "415", "422"):
        assert status in submit["responses"], status
    assert "application/problem+json" in submit["responses"]["413"]["content"]
