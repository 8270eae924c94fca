"""`make prestashop-module` builds a zip PrestaShop's "Upload a module" accepts."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app.core.config import REPO_ROOT

MODULE_DIR = REPO_ROOT / "integrations" / "prestashop" / "jobgate"


def test_make_builds_a_zip_with_one_top_level_folder_named_after_the_module() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    subprocess.run(
        ["make", "-s", "prestashop-module", f"PYTHON={sys.executable}"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    built = REPO_ROOT / "dist" / "jobgate.zip"
    with zipfile.ZipFile(built) as archive:
        names = archive.namelist()
        main = archive.read("jobgate/jobgate.php").decode()
    assert {name.split("/")[0] for name in names} == {"jobgate"}
    # The module's class file carries the folder's name, and its class is the module name.
    assert re.search(r"^class Jobgate extends Module$", main, re.MULTILINE)
    assert "$this->name = 'jobgate';" in main
    files = [p for p in MODULE_DIR.rglob("*") if p.is_file()]
    expected = {f"jobgate/{p.relative_to(MODULE_DIR).as_posix()}" for p in files}
    assert set(names) == expected
    for required in ("jobgate/controllers/front/cron.php", "jobgate/classes/JobgateOutbox.php"):
        assert required in names
    # Nothing from the tests or the repo leaks into what shops install.
    assert not [n for n in names if "/tests/" in n or n.endswith((".py", ".md"))]


def test_the_zip_is_reproducible(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "integrations" / "prestashop"))
    try:
        import build_zip
    finally:
        sys.path.pop(0)
    first = build_zip.build(tmp_path / "a.zip").read_bytes()
    second = build_zip.build(tmp_path / "b.zip").read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
