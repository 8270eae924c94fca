"""JWT bearer access tokens (RFC 9068 style) beside API keys.

Signatures are checked with joserfc, claims with authlib's RFC 9068 resource-server pieces
(`JWTBearerTokenValidator`, `JWTAccessTokenClaims`: `iss`, `aud`, `exp`/`nbf`, `typ`).
The algorithm is pinned by where the key comes from, never by the token alone: JWKS keys
verify only asymmetric algorithms, the shared secret only HS256, and `none` is never
accepted, so HS/RS confusion and `alg: none` tokens fail.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any, TypeGuard

import httpx
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator  # type: ignore[import-untyped]
from authlib.oauth2.rfc9068.claims import JWTAccessTokenClaims  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, OctKey

from app.core.clock import Clock
from app.core.storable import unstorable
from app.tenants.config import JwtSettings
from app.tenants.schemas import TENANT_SCOPES, Principal

logger = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SHARED_SECRET_ALGORITHM = "HS256"
KNOWN_SCOPES = TENANT_SCOPES  # a JWT carries tenant scopes only, never operator rights


class InvalidToken(Exception):
    """The token is not one this gateway accepts (rendered as 401 invalid_token)."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched and no keys are cached (rendered as 503)."""


def is_jwt_shaped(token: str) -> bool:
    return token.count(".") == 2


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token header") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed token header")
    return header


class JwksCache:
    """Keys from a JWKS URL, fetched with httpx (timeout), cached for `ttl_seconds`.

    An unknown `kid` triggers one refresh, at most every `min_refresh_seconds`, so forged
    kids cannot make the gateway hammer the identity provider. When a refresh fails the
    cached keys stay in use.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        ttl_seconds: float,
        timeout_seconds: float,
        min_refresh_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._clock = clock
        self._ttl_ms = int(ttl_seconds * 1000)
        self._min_refresh_ms = int(min_refresh_seconds * 1000)
        self._timeout = timeout_seconds
        self._transport = transport
        self._keys: KeySet | None = None
        self._fetched_ms: int | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def _fetch(self) -> None:
        self.fetches += 1
        # JWKS fetches are rare (TTL, unknown kid), so a client per fetch is fine.
        async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as http:
            response = await http.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            self._keys = KeySet.import_key_set(response.json())

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = self._clock.now_ms()
            fetched = self._fetched_ms
            if fetched is not None:
                fresh = now - fetched < self._ttl_ms
                if (fresh and not force) or now - fetched < self._min_refresh_ms:
                    return
            self._fetched_ms = now
            try:
                await self._fetch()
            except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:
                logger.warning("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
                if self._keys is None:
                    raise KeysUnavailable("the token keys cannot be fetched") from exc

    async def get(self, kid: str | None) -> Key | None:
        await self._refresh(force=False)
        for attempt in range(2):
            if self._keys is not None:
                try:
                    return self._keys.get_by_kid(kid)
                except (JoseError, ValueError):
                    pass
            if attempt == 0:
                await self._refresh(force=True)
        return None


class AccessTokenValidator(JWTBearerTokenValidator):  # type: ignore[misc]
    """authlib's RFC 9068 validator with keys and algorithms chosen by the caller.

    Unlike the stock `authenticate_token`, `sub`, `client_id` and `jti` are not required
    (many providers omit some of them); `iss`, `aud`, `exp` and `iat` are (`iat` bounds the
    token's lifetime, see `JwtVerifier.verify`).
    """

    def __init__(self, *, issuer: str, audience: str, leeway: int) -> None:
        super().__init__(issuer=issuer, resource_server=audience)
        self.leeway = leeway

    def decode(self, token: str, key: Key, algorithm: str, *, now: int) -> JWTAccessTokenClaims:
        options: dict[str, Any] = {
            "iss": {"essential": True, "validate": self.validate_iss},
            "aud": {"essential": True, "value": self.resource_server},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        try:
            decoded = jwt.decode(token, key, algorithms=[algorithm])
            claims = JWTAccessTokenClaims(decoded.claims, decoded.header, options)
            claims.validate(now=now, leeway=self.leeway)
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidToken(type(exc).__name__) from exc
        return claims


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw: Any = claims.get("scope", claims.get("scp", ""))
    items = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return frozenset(s for s in items if isinstance(s, str) and s in KNOWN_SCOPES)


@dataclass(slots=True)
class JwtVerifier:
    """Turns a bearer JWT into a Principal, or raises InvalidToken / KeysUnavailable."""

    validator: AccessTokenValidator
    tenant_claim: str
    clock: Clock
    jwks: JwksCache | None = None
    shared_key: OctKey | None = None
    max_lifetime_seconds: int = 86_400

    @classmethod
    def from_settings(
        cls,
        settings: JwtSettings,
        clock: Clock,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> JwtVerifier | None:
        """None when no JWT keys are configured (API keys only)."""
        if not settings.jwks_url and not settings.hs256_secret:
            return None
        if not settings.issuer or not settings.audience:
            raise ValueError("JWT keys are configured: set JOBGATE_JWT_ISSUER and _AUDIENCE too")
        jwks = None
        if settings.jwks_url:
            jwks = JwksCache(
                settings.jwks_url,
                clock=clock,
                ttl_seconds=settings.jwks_cache_seconds,
                timeout_seconds=settings.jwks_timeout_seconds,
                transport=transport,
            )
        shared = None
        if settings.hs256_secret:
            shared = OctKey.import_key(settings.hs256_secret.encode())
        return cls(
            validator=AccessTokenValidator(
                issuer=settings.issuer,
                audience=settings.audience,
                leeway=settings.leeway_seconds,
            ),
            tenant_claim=settings.tenant_claim,
            clock=clock,
            jwks=jwks,
            shared_key=shared,
            max_lifetime_seconds=settings.max_lifetime_seconds,
        )

    async def _key_for(self, header: dict[str, Any]) -> tuple[Key, str]:
        algorithm = header.get("alg")
        kid = header.get("kid")
        if not isinstance(algorithm, str) or (kid is not None and not isinstance(kid, str)):
            raise InvalidToken("malformed token header")
        if algorithm == SHARED_SECRET_ALGORITHM and self.shared_key is not None:
            return self.shared_key, algorithm
        if algorithm in ASYMMETRIC_ALGORITHMS and self.jwks is not None:
            key = await self.jwks.get(kid)
            if key is None:
                raise InvalidToken("unknown key id")
            return key, algorithm
        raise InvalidToken("algorithm not accepted")

    async def verify(self, token: str) -> Principal:
        key, algorithm = await self._key_for(_header(token))
        claims = self.validator.decode(token, key, algorithm, now=self.clock.now_ms() // 1000)
        issued, expires = claims.get("iat"), claims.get("exp")
        if not _is_int(issued) or not _is_int(expires):
            raise InvalidToken("iat and exp must be integers")
        if expires - issued > self.max_lifetime_seconds:
            raise InvalidToken("the token lives longer than this gateway accepts")
        tenant_id = claims.get(self.tenant_claim)
        if (
            not isinstance(tenant_id, str)
            or not tenant_id
            or len(tenant_id) > 36
            or unstorable(tenant_id)  # it is looked up in the database
        ):
            raise InvalidToken(f"the {self.tenant_claim!r} claim is missing or malformed")
        return Principal(tenant_id=tenant_id, scopes=_scopes(claims))
