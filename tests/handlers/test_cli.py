"""`jobgate shops ...` as a real subprocess against the test database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.bootstrap import Runtime
from app.handlers.models import EmailSender, ShopConnection
from tests.handlers.conftest import SHOP_KEY
from tests.support.servers import CommandFailed, jobgate_env, run_jobgate

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_set_and_list_shops_without_ever_printing_the_key(
    database: tuple[str, str | None], runtime: Runtime, tenant_id: str
) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema, extra={"JOBGATE_SHOP_KEY": SHOP_KEY})
    out = run_jobgate(
        "shops", "set", tenant_id, "--url", "https://shop.example/", "--site-id", "main", env=env
    )
    assert json.loads(out) == {
        "site_id": "main",
        "base_url": "https://shop.example",
        "default": True,
        "timezone": "UTC",
        "ps_version": None,
    }
    run_jobgate(
        "shops",
        "set",
        tenant_id,
        "--url",
        "https://outlet.example",
        "--site-id",
        "outlet",
        "--timezone",
        "Europe/Madrid",
        "--default",
        env=env,
    )
    lines = run_jobgate("shops", "list", tenant_id, "--json", env=env).splitlines()
    listed = [json.loads(line) for line in lines]
    assert [(s["site_id"], s["default"]) for s in listed] == [("main", False), ("outlet", True)]
    run_jobgate("shops", "set-sender", tenant_id, "shop@acme.test", "--name", "Acme", env=env)
    assert SHOP_KEY not in out + json.dumps(listed)

    async with runtime.sessionmaker() as session:
        rows = (await session.execute(select(ShopConnection))).scalars().all()
        sender = await session.get(EmailSender, tenant_id)
    assert {runtime.box.decrypt(r.key_encrypted) for r in rows} == {SHOP_KEY}
    assert all(SHOP_KEY not in r.key_encrypted for r in rows)
    assert sender is not None
    assert sender.address == "shop@acme.test"


async def test_invalid_input_is_refused(
    database: tuple[str, str | None], runtime: Runtime, tenant_id: str
) -> None:
    url, schema = database
    env = jobgate_env(url, schema=schema, extra={"JOBGATE_SHOP_KEY": "too-short"})
    with pytest.raises(CommandFailed, match="32 letters and digits"):
        run_jobgate("shops", "set", tenant_id, "--url", "https://shop.example", env=env)
    env["JOBGATE_SHOP_KEY"] = SHOP_KEY
    with pytest.raises(CommandFailed, match="does not exist"):
        run_jobgate("shops", "set", "no-such-tenant", "--url", "https://shop.example", env=env)
    # SSRF guard: internal addresses and names that resolve to them are refused, naming why.
    for shop_url, reason in (
        ("http://127.0.0.1:8080", "loopback"),
        ("http://localhost:8080", "loopback"),
        ("http://169.254.169.254/latest", "cloud metadata"),
        ("http://[::ffff:10.0.0.1]", "private"),
    ):
        with pytest.raises(CommandFailed, match=reason):
            run_jobgate("shops", "set", tenant_id, "--url", shop_url, env=env)
    # Production also wants https.
    production = {**env, "JOBGATE_ENVIRONMENT": "production", "JOBGATE_SECRET_KEY": "k" * 32}
    with pytest.raises(CommandFailed, match="https in production"):
        run_jobgate("shops", "set", tenant_id, "--url", "http://shop.example", env=production)
