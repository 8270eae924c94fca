"""Failed authentications cost the caller: per client address, a burst, then 429.

Every 401 the API answers (a wrong API key, admin token or JWT, a missing header, a bad
webhook signature or token) is one hit on the address's fixed-window budget
(`JOBGATE_AUTH_FAILURE_BURST` per `JOBGATE_AUTH_FAILURE_WINDOW_SECONDS`), in the same
`limits` storage as the tenant budgets: memory, or Redis with `JOBGATE_REDIS_URL`, where
every gateway counts into one budget. Once it is spent, requests to `/v1` from that address
answer 429 with `Retry-After` until the window ends, before any credential is checked or any
body is read: that is the point, guessing must not cost the gateway work.

Only failures touch the store. Blocked addresses are remembered in memory until their window
ends, so a request from an address in good standing costs a dict lookup, not a Redis round
trip. With several gateways, one that has not seen the address fail yet lets through one more
failure before it learns of the block from the shared count.

The address is the connection's peer, or the `X-Forwarded-For` client when the peer is a
trusted proxy (`JOBGATE_FORWARDED_ALLOW_IPS`); IPv6 clients are counted per /64. Clients
behind one NAT share a budget; a blocked address is refused even with a good credential
until the window ends.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.admission.errors import AuthFailuresThrottled
from app.core.errors import problem_response
from app.observability import metrics

logger = logging.getLogger(__name__)
NAMESPACE = "auth-failures"
# The dashboard's login and session checks count as well: a pasted key is guessed the same way.
PROTECTED_PREFIXES = ("/v1/", "/dashboard")
# Blocked addresses kept in memory; beyond this, expired entries are swept first.
_MAX_REMEMBERED = 100_000


def client_key(address: str) -> str:
    """What a budget is kept per: the IPv4 address, or the IPv6 /64 (one host's usual share,
    which it can otherwise walk through address by address)."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    except ValueError:
        return address


class AuthFailureThrottle:
    """Counts 401s per address; says how long an address is still blocked."""

    def __init__(
        self, storage: Storage, *, burst: int, window_seconds: int, slack: float = 0.0
    ) -> None:
        self.item = RateLimitItemPerSecond(burst, window_seconds)
        self._strategy = FixedWindowRateLimiter(storage)
        # Redis TTLs are whole seconds: never announce the end of a block before it happens.
        self._slack = slack
        self._blocked: dict[str, float] = {}  # address -> end of its block (epoch seconds)

    def retry_after(self, address: str, now: float | None = None) -> int | None:
        """Seconds until `address` may try again, or None when it is not blocked."""
        until = self._blocked.get(address)
        if until is None:
            return None
        now = time.time() if now is None else now
        if until <= now:
            del self._blocked[address]
            return None
        return max(1, math.ceil(until - now))

    async def record_failure(self, address: str) -> None:
        """One failed authentication from `address`; blocks it once the burst is spent."""
        try:
            # Blocked once the burst is spent: the next try is refused, not verified.
            if await self._strategy.hit(self.item, NAMESPACE, address) and (
                await self._strategy.test(self.item, NAMESPACE, address)
            ):
                return
            stats = await self._strategy.get_window_stats(self.item, NAMESPACE, address)
        except StorageError as exc:
            # Failing open: an unreachable store must not turn into refusing everyone.
            logger.warning("auth-failure throttle: the rate-limit store failed: %s", exc)
            return
        if len(self._blocked) >= _MAX_REMEMBERED:
            now = time.time()
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
        self._blocked[address] = stats.reset_time + self._slack
        logger.info(
            "auth-failure throttle: %s blocked for %s s", address, self.retry_after(address)
        )


class FailedAuthThrottle:
    """ASGI middleware: 429 for blocked addresses on `/v1`, and counts every 401 answered."""

    def __init__(self, app: ASGIApp, *, throttle: AuthFailureThrottle) -> None:
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client_key(client[0]) if client else "unknown"
        wait = self.throttle.retry_after(address)
        if wait is not None:
            metrics.admission_refusals.labels(reason="auth_failures", route_class="auth").inc()
            refusal = AuthFailuresThrottled(
                f"too many failed authentications from this address; retry in {wait} s",
                retry_after=wait,
                # Closing spares reading whatever body the request still has in flight.
                headers={"Connection": "close"},
            )
            await problem_response(refusal, Request(scope))(scope, receive, send)
            return
        status = 0

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            if status == 401:
                await self.throttle.record_failure(address)
