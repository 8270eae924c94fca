"""JWT bearer tokens: JWKS (RS256, ES256) over real HTTP, HS256, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, RSAKey

from app.core.clock import ManualClock
from app.core.ids import uuid7
from tests.factories import TenantFactory, auth
from tests.tenants.conftest import ADMIN_TOKEN, AUDIENCE, HS_SECRET, ISSUER, JwksServer

pytestmark = pytest.mark.asyncio

ORDER = {"type": "sync-single-order", "orderId": 42}


def claims(clock: ManualClock, tenant: str, /, **overrides: Any) -> dict[str, Any]:
    now = clock.now_ms() // 1000
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "client-1",
        "client_id": "client-1",
        "iat": now,
        "exp": now + 300,
        "jti": uuid7(),
        "tenant_id": tenant,
        "scope": "jobs:write jobs:read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(key: Key, alg: str, payload: dict[str, Any], **header: Any) -> str:
    kid = key.kid if not isinstance(key, OctKey) else None
    head = {"alg": alg, "typ": "at+jwt", **({"kid": kid} if kid else {}), **header}
    return jwt.encode(head, payload, key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand (for `none` and HS/RS confusion, which joserfc refuses to make)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


def hs_key() -> OctKey:
    return OctKey.import_key(HS_SECRET.encode())


async def submit(client: httpx.AsyncClient, bearer: str) -> httpx.Response:
    return await client.post("/v1/jobs", json=ORDER, headers=auth(bearer))


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "invalid_token" in response.headers["www-authenticate"]


class TestAccepted:
    async def test_rs256_from_jwks_submits_and_another_tenant_cannot_read(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        tenants: TenantFactory,
        rsa_key: RSAKey,
        jwks: JwksServer,
    ) -> None:
        alpha = await tenants.create("alpha")
        beta = await tenants.create("beta")
        mine = token(rsa_key, "RS256", claims(clock, alpha.tenant_id))
        response = await submit(client, mine)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert jwks.hits == 1
        assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(mine))).status_code == 200
        theirs = token(rsa_key, "RS256", claims(clock, beta.tenant_id))
        assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(theirs))).status_code == 404
        listed = await client.get("/v1/jobs", headers=auth(theirs))
        assert listed.status_code == 200
        assert listed.json()["data"] == []
        assert jwks.hits == 1  # cached

    async def test_es256_from_jwks(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory, ec_key: ECKey
    ) -> None:
        alpha = await tenants.create()
        response = await submit(client, token(ec_key, "ES256", claims(clock, alpha.tenant_id)))
        assert response.status_code == 202

    async def test_hs256_shared_secret_and_scp_claim(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory
    ) -> None:
        alpha = await tenants.create()
        payload = claims(clock, alpha.tenant_id, scope=None, scp=["jobs:write"])
        assert (await submit(client, token(hs_key(), "HS256", payload))).status_code == 202

    async def test_expiry_within_leeway_is_accepted(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory, rsa_key: RSAKey
    ) -> None:
        alpha = await tenants.create()
        now = clock.now_ms() // 1000
        payload = claims(clock, alpha.tenant_id, exp=now - 10)
        assert (await submit(client, token(rsa_key, "RS256", payload))).status_code == 202

    async def test_rotated_key_is_fetched_on_unknown_kid(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        tenants: TenantFactory,
        rsa_key: RSAKey,
        jwks: JwksServer,
    ) -> None:
        alpha = await tenants.create()
        assert await submit(client, token(rsa_key, "RS256", claims(clock, alpha.tenant_id)))
        new_key = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
        jwks.keys = [*jwks.keys, new_key]
        clock.advance(seconds=10)  # past the minimum interval between refreshes
        response = await submit(client, token(new_key, "RS256", claims(clock, alpha.tenant_id)))
        assert response.status_code == 202, response.text
        assert jwks.hits == 2


class TestRefused:
    async def test_expired(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory, rsa_key: RSAKey
    ) -> None:
        alpha = await tenants.create()
        now = clock.now_ms() // 1000
        payload = claims(clock, alpha.tenant_id, iat=now - 600, exp=now - 31)
        assert_invalid_token(await submit(client, token(rsa_key, "RS256", payload)))

    async def test_not_yet_valid(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory, rsa_key: RSAKey
    ) -> None:
        alpha = await tenants.create()
        payload = claims(clock, alpha.tenant_id, nbf=clock.now_ms() // 1000 + 120)
        assert_invalid_token(await submit(client, token(rsa_key, "RS256", payload)))

    @pytest.mark.parametrize(
        "override",
        [
            {"aud": "https://someone-else.example"},
            {"iss": "https://evil.example/"},
            {"exp": None},
            {"aud": None},
            {"tenant_id": None},
        ],
    )
    async def test_wrong_or_missing_claims(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        tenants: TenantFactory,
        rsa_key: RSAKey,
        override: dict[str, Any],
    ) -> None:
        alpha = await tenants.create()
        payload = claims(clock, alpha.tenant_id, **override)
        assert_invalid_token(await submit(client, token(rsa_key, "RS256", payload)))

    async def test_wrong_typ_header(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory, rsa_key: RSAKey
    ) -> None:
        alpha = await tenants.create()
        bad = token(rsa_key, "RS256", claims(clock, alpha.tenant_id), typ="id_token+jwt")
        assert_invalid_token(await submit(client, bad))

    async def test_alg_none(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory
    ) -> None:
        alpha = await tenants.create()
        forged = handmade({"alg": "none", "typ": "at+jwt"}, claims(clock, alpha.tenant_id), None)
        assert_invalid_token(await submit(client, forged))

    async def test_hs_rs_confusion(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory, rsa_key: RSAKey
    ) -> None:
        """HS256 keyed with the (public) RSA key, naming the RSA kid: refused."""
        alpha = await tenants.create()
        public_pem = rsa_key.as_pem(private=False)
        header = {"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}
        forged = handmade(header, claims(clock, alpha.tenant_id), public_pem)
        assert_invalid_token(await submit(client, forged))

    async def test_rs256_signed_by_an_unknown_key(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        tenants: TenantFactory,
        jwks: JwksServer,
    ) -> None:
        alpha = await tenants.create()
        stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})  # same kid, other key
        assert_invalid_token(
            await submit(client, token(stranger, "RS256", claims(clock, alpha.tenant_id)))
        )
        unknown = RSAKey.generate_key(2048, parameters={"kid": "nobody"})
        for _ in range(3):
            assert_invalid_token(
                await submit(client, token(unknown, "RS256", claims(clock, alpha.tenant_id)))
            )
        assert jwks.hits == 1  # within the minimum refresh interval: no refetch
        clock.advance(seconds=10)
        for _ in range(3):
            assert_invalid_token(
                await submit(client, token(unknown, "RS256", claims(clock, alpha.tenant_id)))
            )
        assert jwks.hits == 2  # one refresh, however many forged kids arrive

    async def test_wrong_hs_secret(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory
    ) -> None:
        alpha = await tenants.create()
        other = OctKey.import_key(b"another-secret-of-at-least-32-bytes!!")
        assert_invalid_token(
            await submit(client, token(other, "HS256", claims(clock, alpha.tenant_id)))
        )

    async def test_unknown_tenant(
        self, client: httpx.AsyncClient, clock: ManualClock, rsa_key: RSAKey
    ) -> None:
        assert_invalid_token(await submit(client, token(rsa_key, "RS256", claims(clock, uuid7()))))

    async def test_garbage(self, client: httpx.AsyncClient) -> None:
        assert_invalid_token(await submit(client, "a.b.c"))
        assert_invalid_token(await submit(client, "not-a-token"))

    async def test_missing_scope_is_403(
        self, client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory, rsa_key: RSAKey
    ) -> None:
        alpha = await tenants.create()
        payload = claims(clock, alpha.tenant_id, scope="jobs:read")
        assert (await submit(client, token(rsa_key, "RS256", payload))).status_code == 403

    async def test_jwks_down_without_cached_keys_is_503(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        tenants: TenantFactory,
        rsa_key: RSAKey,
        jwks: JwksServer,
    ) -> None:
        alpha = await tenants.create()
        jwks.fail = True
        response = await submit(client, token(rsa_key, "RS256", claims(clock, alpha.tenant_id)))
        assert response.status_code == 503


class TestAdminToken:
    async def test_admin_token_cannot_submit_jobs(self, client: httpx.AsyncClient) -> None:
        assert (await submit(client, ADMIN_TOKEN)).status_code == 403

    async def test_admin_token_reaches_the_admin_api(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/v1/admin/tenants", headers=auth(ADMIN_TOKEN))).status_code == 200
        wrong = ADMIN_TOKEN[:-1] + "x"
        assert (await client.get("/v1/admin/tenants", headers=auth(wrong))).status_code == 401


async def test_jwt_keys_without_issuer_and_audience_are_refused_at_start_up() -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    with pytest.raises(ValidationError, match="JWT_ISSUER"):
        Settings(jwt={"hs256_secret": HS_SECRET})
    with pytest.raises(ValidationError, match="JWT_ISSUER"):
        Settings(jwt={"jwks_url": "http://127.0.0.1:1/jwks", "issuer": ISSUER})
