"""SSRF through shop URLs: refused when saved (admin API, service) and when connecting
(DNS rebinding), connections pinned to the checked address, no echo of foreign bodies."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime, build_runtime
from app.consumer.registry import PermanentFailure
from app.core.clock import ManualClock
from app.core.errors import ValidationFailed
from app.handlers import service
from app.handlers.prestashop import PrestaShopUnavailable
from app.handlers.shop_url import PinnedTransport, ShopUrlGuard, refusal_reason
from app.handlers.sync import GUARD_STATE
from app.main import create_app
from app.settings import Settings
from tests.factories import auth
from tests.handlers.conftest import SHOP_KEY, MakeRun
from tests.support.asgi import asgi_client
from tests.support.fake_prestashop import FakePrestaShop, ThreadedServer
from tests.support.servers import free_port

pytestmark = pytest.mark.asyncio

ADMIN_TOKEN = "operator-token-for-shop-url-tests"
PUBLIC_V4 = "93.184.215.14"

# One address of every refused class, and the reason named for it.
REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "private"),  # documentation range (Python counts it as private)
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("64:ff9b::a00:1", "private"),
    ("2002:7f00:1::", "loopback"),
]


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def fixed_resolver(*answers: str) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


@pytest.mark.parametrize(("address", "reason"), REFUSED)
async def test_every_refused_class_has_its_reason(address: str, reason: str) -> None:
    why = refusal_reason(ipaddress.ip_address(address))
    assert why is not None
    assert reason in why


@pytest.mark.parametrize("address", [PUBLIC_V4, "1.1.1.1", "2606:4700:4700::1111"])
async def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


@pytest_asyncio.fixture
async def admin_http(
    settings: Settings, clock: ManualClock, db_engine: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    runtime = build_runtime(
        settings.updated(security={"admin_token": ADMIN_TOKEN}), clock=clock, engine=db_engine
    )
    async with asgi_client(create_app(runtime=runtime)) as http:
        yield http
    await runtime.queue_engine.close()


class TestSaving:
    @pytest.mark.parametrize(("address", "reason"), REFUSED)
    async def test_admin_route_refuses_each_class_naming_it(
        self, admin_http: httpx.AsyncClient, tenant_id: str, address: str, reason: str
    ) -> None:
        response = await admin_http.put(
            f"/v1/admin/tenants/{tenant_id}/shops/main",
            json={"base_url": f"http://{_host(address)}:8080", "webservice_key": SHOP_KEY},
            headers=auth(ADMIN_TOKEN),
        )
        assert response.status_code == 422, response.text
        assert reason in response.json()["detail"]
        listed = await admin_http.get(
            f"/v1/admin/tenants/{tenant_id}/shops", headers=auth(ADMIN_TOKEN)
        )
        assert listed.json()["data"] == []

    async def test_a_name_is_refused_if_any_of_its_addresses_is(
        self, runtime: Runtime, tenant_id: str
    ) -> None:
        guard = ShopUrlGuard(resolver=fixed_resolver(PUBLIC_V4, "10.0.0.7"))
        async with runtime.sessionmaker() as session:
            with pytest.raises(ValidationFailed, match=r"private address \(10\.0\.0\.7\)"):
                await service.set_shop_connection(
                    session,
                    tenant_id=tenant_id,
                    site_id="main",
                    base_url="https://shop.tenant.example.com",
                    key=SHOP_KEY,
                    box=runtime.box,
                    guard=guard,
                )

    async def test_public_names_are_saved_and_production_wants_https(
        self, runtime: Runtime, tenant_id: str
    ) -> None:
        public = ShopUrlGuard(resolver=fixed_resolver(PUBLIC_V4))
        production = ShopUrlGuard(require_https=True, resolver=fixed_resolver(PUBLIC_V4))
        async with runtime.sessionmaker() as session:
            for guard, url in ((public, "http://shop.com"), (production, "https://shop.com")):
                row = await service.set_shop_connection(
                    session,
                    tenant_id=tenant_id,
                    site_id="main",
                    base_url=url,
                    key=SHOP_KEY,
                    box=runtime.box,
                    guard=guard,
                )
                assert row.base_url == url
            with pytest.raises(ValidationFailed, match="https in production"):
                await service.set_shop_connection(
                    session,
                    tenant_id=tenant_id,
                    site_id="main",
                    base_url="http://shop.com",
                    key=SHOP_KEY,
                    box=runtime.box,
                    guard=production,
                )

    async def test_a_name_that_does_not_resolve_yet_is_saved_and_checked_on_connect(
        self, runtime: Runtime, tenant_id: str, make_run: MakeRun, settings: Settings
    ) -> None:
        async def nxdomain(host: str, port: int) -> list[str]:
            raise OSError("Name or service not known")

        await _save(
            runtime, tenant_id, "https://new-shop.example.com", ShopUrlGuard(resolver=nxdomain)
        )
        run = make_run("sync-single-order", {"orderId": 1}, tenant_id=tenant_id, settings=settings)
        run.ctx.resources.state[GUARD_STATE] = ShopUrlGuard(resolver=fixed_resolver("10.0.0.5"))
        with pytest.raises(PermanentFailure, match="private address"):
            await run()

    async def test_the_allow_flag_admits_loopback(
        self, runtime: Runtime, tenant_id: str, settings: Settings
    ) -> None:
        allowed = settings.updated(prestashop={"allow_private_urls": True})
        async with runtime.sessionmaker() as session:
            row = await service.set_shop_connection(
                session,
                tenant_id=tenant_id,
                site_id="main",
                base_url="http://127.0.0.1:9",
                key=SHOP_KEY,
                box=runtime.box,
                guard=ShopUrlGuard.from_settings(allowed.prestashop, allowed.environment),
            )
        assert row.base_url == "http://127.0.0.1:9"


@pytest.fixture
def shop() -> Iterator[tuple[FakePrestaShop, ThreadedServer]]:
    fake = FakePrestaShop()
    fake.add_key(SHOP_KEY)
    with ThreadedServer(fake.app) as server:
        yield fake, server


async def _save(runtime: Runtime, tenant_id: str, base_url: str, guard: ShopUrlGuard) -> None:
    async with runtime.sessionmaker() as session:
        await service.set_shop_connection(
            session,
            tenant_id=tenant_id,
            site_id="main",
            base_url=base_url,
            key=SHOP_KEY,
            box=runtime.box,
            guard=guard,
        )
        await session.commit()


class TestConnecting:
    async def test_a_name_that_rebinds_to_loopback_is_refused_before_any_request(
        self,
        shop: tuple[FakePrestaShop, ThreadedServer],
        runtime: Runtime,
        tenant_id: str,
        make_run: MakeRun,
        settings: Settings,
    ) -> None:
        fake, server = shop
        base_url = f"http://shop.tenant.example.com:{server.port}"
        # Saved while the name pointed at a public address...
        await _save(runtime, tenant_id, base_url, ShopUrlGuard(resolver=fixed_resolver(PUBLIC_V4)))
        # ...then it answers with loopback, where the fake "internal service" listens.
        run = make_run("sync-single-order", {"orderId": 1}, tenant_id=tenant_id, settings=settings)
        run.ctx.resources.state[GUARD_STATE] = ShopUrlGuard(resolver=fixed_resolver("127.0.0.1"))
        with pytest.raises(PermanentFailure, match=r"loopback address \(127\.0\.0\.1\)"):
            await run()
        assert fake.requests == []

    async def test_localhost_is_refused_with_the_system_resolver(
        self,
        shop: tuple[FakePrestaShop, ThreadedServer],
        runtime: Runtime,
        tenant_id: str,
        make_run: MakeRun,
        settings: Settings,
    ) -> None:
        fake, server = shop
        # Saved in development mode, run by a consumer without the allow flag.
        await _save(
            runtime,
            tenant_id,
            f"http://localhost:{server.port}",
            ShopUrlGuard(allow_private=True),
        )
        assert settings.prestashop.allow_private_urls is False
        run = make_run("sync-orders", {"siteId": "main"}, tenant_id=tenant_id, settings=settings)
        with pytest.raises(PermanentFailure, match="loopback"):
            await run()
        assert fake.requests == []

    async def test_the_connection_goes_to_the_checked_address_with_the_shop_host(
        self, runtime: Runtime, tenant_id: str, make_run: MakeRun, settings: Settings
    ) -> None:
        seen: list[dict[str, str]] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b'{"orders": []}'})

        with ThreadedServer(app) as server:
            base_url = f"http://shop.tenant.example.com:{server.port}"
            await _save(runtime, tenant_id, base_url, ShopUrlGuard(allow_private=True))
            run = make_run(
                "sync-single-order", {"orderId": 5}, tenant_id=tenant_id, settings=settings
            )
            # Allowed (development), but still resolved once and pinned: the name does not
            # exist in DNS, so only the pinned address can have carried the request.
            guard = ShopUrlGuard(allow_private=True, resolver=fixed_resolver("127.0.0.1"))
            run.ctx.resources.state[GUARD_STATE] = guard
            with pytest.raises(PermanentFailure, match="not in the answer"):
                await run()
        assert [h["host"] for h in seen] == [f"shop.tenant.example.com:{server.port}"]


class TestNoEcho:
    @pytest.mark.parametrize("status", [500, 404, 403, 200])
    async def test_bodies_of_non_shop_answers_never_reach_the_error(
        self,
        runtime: Runtime,
        tenant_id: str,
        make_run: MakeRun,
        handler_settings: Settings,
        status: int,
    ) -> None:
        secret = "INTERNAL-ADMIN-PANEL aws_secret_access_key=AKIA" + "x" * 5000

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            headers = [(b"content-type", b"text/html; charset=utf-8")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": secret.encode()})

        with ThreadedServer(app) as server:
            await _save(runtime, tenant_id, server.base_url, ShopUrlGuard(allow_private=True))
            run = make_run(
                "sync-orders", {"siteId": "main"}, tenant_id=tenant_id, settings=handler_settings
            )
            with pytest.raises((PermanentFailure, PrestaShopUnavailable)) as caught:
                await run()
        message = str(caught.value)
        assert "INTERNAL" not in message
        assert "AKIA" not in message
        assert "text/html" in message
        assert len(message) < 300


def _self_signed(host: str, directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_keeps_the_shop_name_for_sni_and_the_certificate(tmp_path: Path) -> None:
    host = "shop.tenant.example.com"
    cert_path, key_path = _self_signed(host, tmp_path)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert_path),
        ssl_keyfile=str(key_path),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        trust = ssl.create_default_context(cafile=str(cert_path))
        guard = ShopUrlGuard(allow_private=True, resolver=fixed_resolver("127.0.0.1"))
        transport = PinnedTransport(guard, verify=trust)
        async with httpx.AsyncClient(transport=transport) as http:
            # Neither name exists in DNS: the pinned address carries both requests.
            answer = await http.get(f"https://{host}:{port}/api/")
            assert answer.status_code == 200
            # Another name on the same address gets its own connection and its own
            # certificate check, which fails: a verified connection is never shared.
            with pytest.raises(httpx.ConnectError, match="certificate"):
                await http.get(f"https://other.tenant.example.com:{port}/api/")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
