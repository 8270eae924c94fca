"""The PrestaShop module's own signing code (PHP) against the gateway's verifier.

Skipped only when `php` is missing outside CI; in CI (`CI=true`) a missing php fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.core.config import REPO_ROOT
from app.jobs.models import Job
from app.tenants.schemas import TenantCreated
from app.webhooks.verifiers import decode_secret, sign
from tests.factories import TenantFactory

SIGNER = REPO_ROOT / "integrations" / "prestashop" / "tests" / "sign.php"
PHP = shutil.which("php")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if PHP is None and not IN_CI:
    pytest.skip("php is not installed (CI installs php-cli)", allow_module_level=True)


def php_headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    assert PHP is not None, "CI must have php (integrations/prestashop/ci.sh installs it)"
    request = {"secrets": secrets, "id": msg_id, "timestamp": timestamp, "body": body.decode()}
    done = subprocess.run(
        [PHP, str(SIGNER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    headers: dict[str, str] = json.loads(done.stdout)
    return headers


def test_php_signer_matches_the_official_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = php_headers([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    second = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    both = php_headers([secret, second], "msg_x", 1614265330, body)
    expected = [sign(decode_secret(s), "msg_x", 1614265330, body) for s in (secret, second)]
    assert both["webhook-signature"] == " ".join(expected)


@pytest_asyncio.fixture
async def tenant(tenants: TenantFactory) -> TenantCreated:
    return await tenants.create()


async def _jobs(runtime: Runtime) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Job))).scalar_one())


@pytest.mark.asyncio
async def test_gateway_accepts_the_php_signature_and_refuses_a_tampered_body(
    client: httpx.AsyncClient, clock: ManualClock, runtime: Runtime, tenant: TenantCreated
) -> None:
    event: dict[str, Any] = {
        "type": "order.created",
        "shop": {"id": "1", "url": "https://shop.example"},
        "data": {"id_order": 42, "reference": "XKBKNABJK", "current_state": 2},
        "occurred_at": "2026-11-28T13:00:00Z",
    }
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = php_headers([tenant.webhook_secret], "msg_php_1", clock.now_ms() // 1000, body)
    url = f"/v1/webhooks/prestashop/{tenant.tenant_id}"
    tampered = await client.post(url, content=body.replace(b"42", b"43"), headers=headers)
    assert tampered.status_code == 401
    assert await _jobs(runtime) == 0
    accepted = await client.post(url, content=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    assert len(accepted.json()["jobs"]) == 1
    assert await _jobs(runtime) == 1
