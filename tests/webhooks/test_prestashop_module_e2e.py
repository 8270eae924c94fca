"""The PrestaShop module's own PHP code (on stubs of the few PrestaShop classes it uses)
against a real `jobgate serve`: event table → sender → signed delivery → job.

A checkout only stores the event; under PHP-FPM it is sent after the response, otherwise by
the cron run; a re-sent stored event (lost response) keeps its webhook-id and makes no
second job; a gateway that is down leaves events waiting with backoff; a bounded batch per
cron run; the "test connection" button makes no job. Skipped when php is missing outside
CI; under `CI=true` a missing php fails.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import REPO_ROOT
from tests.support.servers import (
    ServerProcess,
    create_tenant,
    jobgate_env,
    jobgate_server,
    run_jobgate,
)

MODULE = REPO_ROOT / "integrations" / "prestashop" / "tests" / "module.php"
PHP = shutil.which("php")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHOP_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"

if PHP is None and not IN_CI:
    pytest.skip("php is not installed (CI installs php-cli)", allow_module_level=True)

pytestmark = pytest.mark.slow


class Shop:
    """One shop: the module's SQLite database, driven one `php module.php ...` run at a time."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def run(self, *args: str, fpm: bool = False) -> list[dict[str, Any]]:
        assert PHP is not None, "CI must have php (integrations/prestashop/ci.sh installs it)"
        fpm_flag = "1" if fpm else ""
        env = {**os.environ, "JOBGATE_TEST_DB": str(self.db), "JOBGATE_TEST_FPM": fpm_flag}
        done = subprocess.run(
            [PHP, str(MODULE), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr + done.stdout
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def one(self, *args: str) -> Any:
        (result,) = self.run(*args)
        return result

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.one("rows")
        return rows

    def reinsert(self, row: dict[str, Any]) -> None:
        """The gateway got the event but its answer was lost: the row is still there."""
        with sqlite3.connect(self.db) as conn:
            conn.execute(
                "INSERT INTO ps_jobgate_event (message_id, body, attempts, next_attempt_at,"
                " failed, last_status, date_add) VALUES (?, ?, 0, 0, 0, 0, '2026-01-01 00:00:00')",
                (row["message_id"], row["body"]),
            )


@pytest.fixture
def gateway(database: tuple[str, str | None]) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    url, schema = database
    env = jobgate_env(url, schema=schema, extra={"JOBGATE_SHOP_KEY": SHOP_KEY})
    tenant = create_tenant(env, f"php-shop-{uuid.uuid4().hex[:8]}")
    # The README's step: register the shop's Webservice (default site id: "default").
    run_jobgate("shops", "set", tenant["tenant_id"], "--url", "https://shop.example", env=env)
    with jobgate_server("serve", env=env) as server:
        yield server, tenant


def _jobs(server: ServerProcess, api_key: str) -> list[dict[str, Any]]:
    response = httpx.get(
        server.url("/v1/jobs"), headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()["data"]
    return jobs


def test_a_stored_event_becomes_one_job_and_a_resend_makes_none(
    gateway: tuple[ServerProcess, dict[str, str]], tmp_path: Path
) -> None:
    server, tenant = gateway
    shop = Shop(tmp_path / "shop.db")
    installed = shop.one("install", server.base_url, tenant["tenant_id"], tenant["webhook_secret"])
    assert installed["installed"]
    assert installed["saved"]
    assert installed["site_id"] == "default"

    test = shop.one("ping")
    assert test["ok"] is True, test
    assert '"default"' in test["message"]
    assert _jobs(server, tenant["api_key"]) == []

    # PHP-FPM: the event is in the table when the response is handed back, sent afterwards.
    request, finished = shop.run("order", "42", fpm=True)
    assert request == {"request_done": True, "unsent": 1}
    assert finished == {"response_finished": True, "unsent": 1}
    assert shop.rows() == []
    (job,) = _jobs(server, tenant["api_key"])
    assert job["type"] == "sync-single-order"
    # The module's default site id is the one `jobgate shops set` registered by default.
    assert job["payload"] == {"orderId": 42, "siteId": "default"}

    # Without FPM nothing leaves during the request; the cron run sends it.
    assert shop.run("order", "43") == [{"request_done": True, "unsent": 1}]
    (stored,) = shop.rows()
    assert len(_jobs(server, tenant["api_key"])) == 1
    assert shop.one("cron") == {"sent": 1, "failed": 0, "unsent": 0}
    jobs = _jobs(server, tenant["api_key"])
    assert sorted(j["payload"]["orderId"] for j in jobs) == [42, 43]

    # A re-send of the same stored event (its answer was lost) is a replay: no new job.
    shop.reinsert(stored)
    assert shop.one("cron") == {"sent": 1, "failed": 0, "unsent": 0}
    assert len(_jobs(server, tenant["api_key"])) == 2


def test_a_wrong_secret_is_reported_and_the_event_kept_as_failed(
    gateway: tuple[ServerProcess, dict[str, str]], tmp_path: Path
) -> None:
    server, tenant = gateway
    shop = Shop(tmp_path / "shop.db")
    wrong = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    shop.one("install", server.base_url, tenant["tenant_id"], wrong)
    test = shop.one("ping")
    assert test["ok"] is False
    assert "secret" in test["message"]
    shop.run("order", "7")
    assert shop.one("cron") == {"sent": 0, "failed": 1, "unsent": 0}
    (row,) = shop.rows()
    assert (row["failed"], row["last_status"]) == (1, 401)
    assert "given up on" in shop.one("page")["html"]
    assert _jobs(server, tenant["api_key"]) == []


def test_an_unreachable_gateway_backs_off_in_bounded_batches(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "shop.db")
    # Port 9 (discard) on loopback: connection refused, at once.
    shop.one("install", "http://127.0.0.1:9", "tenant-x", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    for order in ("1", "2", "3"):
        shop.run("order", order)
    shop.run("product", "5")  # three hooks of one save: one event
    before = shop.rows()
    assert len(before) == 4
    assert shop.one("cron", "3") == {"sent": 0, "failed": 3, "unsent": 4}
    after = shop.rows()
    assert [r["attempts"] for r in after] == [1, 1, 1, 0]
    assert all(r["next_attempt_at"] > 0 and r["failed"] == 0 for r in after[:3])
    # Waiting rows are not due yet: the next run only tries the fourth.
    assert shop.one("cron", "3") == {"sent": 0, "failed": 1, "unsent": 4}
    shop.one("due-now")
    shop.one("cron")
    again = shop.rows()
    assert [r["attempts"] for r in again] == [2, 2, 2, 2]
    # Retries keep the webhook-id the event was stored with.
    assert [r["message_id"] for r in again] == [r["message_id"] for r in before]
    page = shop.one("page")
    assert "Events waiting to be sent: 4" in page["html"]
    assert f"controller=cron&amp;token={page['cron_token']}" in page["html"]
    assert shop.one("uninstall") == {"uninstalled": True, "table_left": 0}


def test_upgrading_a_1_0_0_table_keeps_its_events(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "shop.db")
    upgraded = shop.one("upgrade-from-1.0.0")
    assert upgraded["upgraded"] is True
    assert upgraded["unsent"] == 1
    (row,) = upgraded["rows"]
    assert (row["message_id"], row["attempts"], row["failed"], row["last_status"]) == (
        "msg_old",
        3,
        0,
        0,
    )


def test_the_configuration_page_never_shows_the_secret(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "shop.db")
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    shop.one("install", "http://127.0.0.1:9", "tenant-x", secret)
    page = shop.one("configure")
    html = page["html"]
    assert secret not in html
    assert 'name="JOBGATE_SECRET" value=""' in html
    assert 'name="JOBGATE_TENANT_ID" value="tenant-x"' in html
    assert 'name="JOBGATE_SITE_ID" value="default"' in html
    assert 'name="submitJobgateTest"' in html
    assert "Events waiting to be sent: 0" in html
    assert "controller=cron&amp;token=" in html
    # Saving with the secret field left empty keeps the stored secret.
    form = {
        "submitJobgate": "1",
        "JOBGATE_GATEWAY_URL": "http://127.0.0.1:9",
        "JOBGATE_TENANT_ID": "tenant-y",
        "JOBGATE_SECRET": "",
        "JOBGATE_SITE_ID": "",
    }
    saved = shop.one("configure", json.dumps(form))
    assert "Settings updated" in saved["html"]
    assert saved["secret"] == secret
    assert 'name="JOBGATE_TENANT_ID" value="tenant-y"' in saved["html"]
    assert 'name="JOBGATE_SITE_ID" value="default"' in saved["html"]
    bad = shop.one("configure", json.dumps({**form, "JOBGATE_SECRET": "not-a-secret!"}))
    assert "whsec_" in bad["html"]
    assert bad["secret"] == secret
    # The test button against nothing listening: a clear message, no exception.
    tested = shop.one("configure", json.dumps({"submitJobgateTest": "1"}))
    assert "could not be reached" in tested["html"]
