"""JWT lifetime is capped (`exp - iat`), and a tenant claim must be a storable string."""

from __future__ import annotations

import httpx
import pytest
from joserfc.jwk import RSAKey

from app.core.clock import ManualClock
from app.settings import Settings
from app.tenants.tokens import InvalidToken, JwtVerifier
from tests.factories import TenantFactory
from tests.tenants.test_tokens import assert_invalid_token, claims, hs_key, submit, token

pytestmark = pytest.mark.asyncio

DAY = 86_400


async def test_a_token_living_up_to_a_day_is_accepted(
    client: httpx.AsyncClient, clock: ManualClock, tenants: TenantFactory, rsa_key: RSAKey
) -> None:
    tenant = await tenants.create()
    now = clock.now_ms() // 1000
    payload = claims(clock, tenant.tenant_id, iat=now - 60, exp=now - 60 + DAY)
    response = await submit(client, token(rsa_key, "RS256", payload))
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "lifetime",
    [
        {"iat": 0, "exp": DAY + 1},  # one second too long
        {"iat": 0, "exp": 10 * 365 * DAY},  # ten years
        {"iat": None, "exp": 300},  # no iat: the lifetime cannot be told
        {"iat": "0", "exp": 300},
    ],
)
async def test_a_token_living_too_long_or_without_iat_is_refused(
    client: httpx.AsyncClient,
    clock: ManualClock,
    tenants: TenantFactory,
    rsa_key: RSAKey,
    lifetime: dict[str, object],
) -> None:
    tenant = await tenants.create()
    now = clock.now_ms() // 1000
    iat, exp = lifetime["iat"], lifetime["exp"]
    payload = claims(
        clock,
        tenant.tenant_id,
        iat=now + iat if isinstance(iat, int) else iat,
        exp=now + exp if isinstance(exp, int) else exp,
    )
    for key, alg in ((rsa_key, "RS256"), (hs_key(), "HS256")):
        assert_invalid_token(await submit(client, token(key, alg, payload)))


async def test_the_cap_is_configurable(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, clock: ManualClock
) -> None:
    monkeypatch.setenv("JOBGATE_JWT_MAX_LIFETIME_SECONDS", "600")
    capped = Settings(**settings.model_dump(exclude={"jwt": {"max_lifetime_seconds"}}))
    assert capped.jwt.max_lifetime_seconds == 600
    verifier = JwtVerifier.from_settings(capped.jwt, clock)
    assert verifier is not None
    now = clock.now_ms() // 1000
    short = claims(clock, "t-1", iat=now, exp=now + 600)
    assert (await verifier.verify(token(hs_key(), "HS256", short))).tenant_id == "t-1"
    long = claims(clock, "t-1", iat=now, exp=now + 601)
    with pytest.raises(InvalidToken, match="longer"):
        await verifier.verify(token(hs_key(), "HS256", long))


async def test_a_tenant_claim_with_a_nul_is_a_401(
    client: httpx.AsyncClient, clock: ManualClock, rsa_key: RSAKey
) -> None:
    payload = claims(clock, "tenant\x00")
    assert_invalid_token(await submit(client, token(rsa_key, "RS256", payload)))
