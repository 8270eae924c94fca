"""`jobgate migrate bull` refusing to start: a bad mapping file (exit 2), no key, no Redis.
No gateway is needed for these (nothing is sent)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from tests.support.servers import call_jobgate, free_port


def _migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return call_jobgate("migrate", "bull", *args, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_what_stops_it_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues: {email: {type: send-mail}}", encoding="utf-8")
    refused = _migrate("--redis-url", "redis://127.0.0.1:1/0", "--mapping", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: the mapping file ")
    assert "unknown job type 'send-mail'" in refused.stderr

    good = tmp_path / "good.yaml"
    good.write_text("queues: {email: {type: send-email}}", encoding="utf-8")
    keyless = _migrate("--redis-url", "redis://127.0.0.1:1/0", "--mapping", str(good))
    assert keyless.returncode == 1
    assert keyless.stderr.strip() == (
        "error: give the tenant's key: --key or JOBGATE_KEY (or use --dry-run)"
    )

    not_a_url = _migrate("--redis-url", "127.0.0.1:6379", "--mapping", str(good), "--dry-run")
    assert not_a_url.returncode == 2
    assert not_a_url.stderr.startswith("error: --redis-url: ")

    # A port nothing listens on: the run stops naming Redis (never its password).
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    unreachable = _migrate("--redis-url", url, "--mapping", str(good), "--dry-run")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"error: Redis at 127.0.0.1:{url.rsplit(':', 1)[1]}: ")
    assert "s3cret" not in unreachable.stderr + unreachable.stdout

    # A prefix with no queue (a typo) is said, not taken for an empty Bull.
    prefix = f"jgtest-none-{uuid.uuid4().hex[:8]}"
    args = ("--redis-url", "redis://127.0.0.1:6379/0", "--mapping", str(good), "--dry-run")
    empty = _migrate(*args, "--prefix", prefix)
    assert empty.returncode == 1
    assert empty.stderr.strip() == (
        f"error: no Bull queue under the key prefix '{prefix}' (see --prefix)"
    )
