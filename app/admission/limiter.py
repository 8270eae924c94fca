"""Per-tenant rate limits on top of `limits` (asyncio), in memory or in Redis.

slowapi's decorators key on the raw request, before authentication, and use the synchronous
`limits` API (a blocking Redis call on the event loop); the tenant is only known after
authentication and a batch costs one unit per job, so the gateway uses `limits.aio` directly.

Fixed windows per (tenant, route class): the window starts at the first hit and its reset
time is exact, so `Retry-After` says when the whole budget is back. Refusals do not spend
budget (`test` before `hit`); two gateways racing on the last units may both `hit`, and the
loser is refused, so the shared budget is never exceeded. With `JOBGATE_REDIS_URL` every
gateway sharing the Redis database and key prefix shares one budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from app.admission.config import MAX_RETRY_AFTER_SECONDS, MIN_RETRY_AFTER_SECONDS
from app.admission.errors import RateLimited

# Budget keys kept built (tenant x route class x limit); the cache restarts when full.
_MAX_CACHED_KEYS = 100_000


class RouteClass(StrEnum):
    """What a request is charged against; each has its own budget per tenant."""

    jobs = "jobs"  # one unit per submitted job (single or in a batch)
    batch = "batch"  # one unit per batch request
    webhooks = "webhooks"
    reads = "reads"
    emails = "emails"  # one unit per send-email job, at the tenant's email policy rate


class LimiterUnavailable(Exception):
    """The shared store (Redis) did not answer."""


@dataclass(frozen=True, slots=True)
class Charge:
    route_class: RouteClass
    item: RateLimitItem
    cost: int = 1


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a tenant stands in one budget after (or instead of) a charge."""

    route_class: RouteClass
    limit: int
    remaining: int
    window_seconds: int
    reset_at: float  # epoch seconds (the `limits` clock: wall time)


def storage_uri(redis_url: str | None) -> str:
    """`limits.aio` storage URI: `async+redis://` for a `redis://` URL, else memory."""
    if not redis_url:
        return "async+memory://"
    if redis_url.startswith("async+"):
        return redis_url
    return f"async+{redis_url}"


def rate_limit_headers(standings: Sequence[Standing], now: float | None = None) -> dict[str, str]:
    """Both header generations: `RateLimit-Limit/-Remaining/-Reset` for the first budget,
    and the IETF draft's `RateLimit-Policy` / `RateLimit` for all of them."""
    if not standings:
        return {}
    now = time.time() if now is None else now
    resets = [max(0, math.ceil(s.reset_at - now)) for s in standings]
    first = standings[0]
    return {
        "RateLimit-Limit": str(first.limit),
        "RateLimit-Remaining": str(first.remaining),
        "RateLimit-Reset": str(resets[0]),
        "RateLimit-Policy": ", ".join(
            f'"{s.route_class}";q={s.limit};w={s.window_seconds}' for s in standings
        ),
        "RateLimit": ", ".join(
            f'"{s.route_class}";r={s.remaining};t={reset}'
            for s, reset in zip(standings, resets, strict=True)
        ),
    }


class TenantLimiter:
    """Fixed-window budgets per (tenant, route class), in memory or in Redis."""

    def __init__(self, redis_url: str | None = None, *, prefix: str = "jobgate") -> None:
        uri = storage_uri(redis_url)
        self.shared = uri != "async+memory://"
        options: dict[str, str | bool] = {"wrap_exceptions": True}
        if self.shared:
            options.update(implementation="redispy", key_prefix=prefix)
        storage = storage_from_string(uri, **options)
        assert isinstance(storage, Storage)
        self.storage = storage
        self._strategy = FixedWindowRateLimiter(self.storage)
        # Redis TTLs are whole seconds (rounded): never promise a reset before it happens.
        self.reset_slack = 0.5 if self.shared else 0.0
        self._keys: dict[tuple[str, RouteClass, RateLimitItem], str] = {}
        # In memory, budgets are counted here: `limits`' memory storage starts a task that
        # scans every key on each increment, a cost per request that grows with the tenants.
        self._windows = None if self.shared else _Windows()

    async def charge(self, tenant_id: str, charges: Sequence[Charge]) -> list[Standing]:
        """Spend each charge's cost, all or none; raise `RateLimited` naming the budget.

        What `limits`' fixed window strategy does (`test` every budget, then `hit` each),
        with each key built once per tenant and the count after a hit taken from the
        increment itself.
        """
        try:
            keys = [self._key(tenant_id, charge) for charge in charges]
            for charge, key in zip(charges, keys, strict=True):
                if await self._count(key) > charge.item.amount - charge.cost:
                    raise await self._refusal(tenant_id, charge, charges)
            standings: list[Standing] = []
            for charge, key in zip(charges, keys, strict=True):
                count, reset_at = await self._hit(key, charge)
                if count > charge.item.amount:
                    raise await self._refusal(tenant_id, charge, charges)
                standings.append(_standing(charge, count, reset_at))
            return standings
        except StorageError as exc:
            raise LimiterUnavailable(str(exc)) from exc

    def _key(self, tenant_id: str, charge: Charge) -> str:
        """The storage key of a tenant's budget (what `RateLimitItem.key_for` builds)."""
        cached = (tenant_id, charge.route_class, charge.item)
        key = self._keys.get(cached)
        if key is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            key = self._keys[cached] = charge.item.key_for(tenant_id, charge.route_class)
        return key

    async def _count(self, key: str) -> int:
        if self._windows is not None:
            return self._windows.count(key, time.time())
        return await self.storage.get(key)

    async def _hit(self, key: str, charge: Charge) -> tuple[int, float]:
        """Add the charge's cost; the count after it and when its window resets."""
        expiry = charge.item.get_expiry()
        if self._windows is not None:
            return self._windows.add(key, charge.cost, expiry, time.time())
        count = await self.storage.incr(key, expiry, amount=charge.cost)
        return count, await self.storage.get_expiry(key) + self.reset_slack

    async def _standing(self, tenant_id: str, charge: Charge) -> Standing:
        key = self._key(tenant_id, charge)
        if self._windows is not None:
            now = time.time()
            return _standing(charge, self._windows.count(key, now), self._windows.reset(key, now))
        stats = await self._strategy.get_window_stats(charge.item, tenant_id, charge.route_class)
        count = charge.item.amount - int(stats.remaining)
        return _standing(charge, count, stats.reset_time + self.reset_slack)

    async def _refusal(
        self, tenant_id: str, refused: Charge, charges: Sequence[Charge]
    ) -> RateLimited:
        standings = [await self._standing(tenant_id, charge) for charge in charges]
        mine = standings[charges.index(refused)]
        now = time.time()
        wait = min(
            MAX_RETRY_AFTER_SECONDS, max(MIN_RETRY_AFTER_SECONDS, math.ceil(mine.reset_at - now))
        )
        limit = f"{mine.limit} per {_window(mine.window_seconds)}"
        if refused.cost > mine.limit:
            detail = (
                f"this request costs {refused.cost} {refused.route_class} units but the "
                f"{refused.route_class} limit is {limit}: send fewer jobs per request"
            )
        else:
            detail = (
                f"{refused.route_class} rate limit of {limit} reached "
                f"({mine.remaining} left, this request needs {refused.cost}); "
                f"the window resets in {wait} s"
            )
        return RateLimited(detail, retry_after=wait, headers=rate_limit_headers(standings, now))

    async def close(self) -> None:
        if self.shared:
            bridge = getattr(self.storage, "bridge", None)
            client = getattr(bridge, "storage", None)
            if client is not None and hasattr(client, "aclose"):
                await client.aclose()


def _standing(charge: Charge, count: int, reset_at: float) -> Standing:
    return Standing(
        route_class=charge.route_class,
        limit=charge.item.amount,
        remaining=max(0, charge.item.amount - count),
        window_seconds=charge.item.get_expiry(),
        reset_at=reset_at,
    )


class _Windows:
    """Fixed windows in this process: per key, a count and when its window ends (the first
    hit starts it, as in `limits`); expired windows are dropped at most once a minute."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}
        self._next_sweep = 0.0

    def count(self, key: str, now: float) -> int:
        window = self._windows.get(key)
        return window[0] if window is not None and window[1] > now else 0

    def reset(self, key: str, now: float) -> float:
        window = self._windows.get(key)
        return window[1] if window is not None and window[1] > now else now

    def add(self, key: str, cost: int, expiry: int, now: float) -> tuple[int, float]:
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            window = (cost, now + expiry)
            if now >= self._next_sweep:
                self._next_sweep = now + 60
                self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
        else:
            window = (window[0] + cost, window[1])
        self._windows[key] = window
        return window


def _window(seconds: int) -> str:
    for name, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds == size:
            return name
        if seconds % size == 0:
            return f"{seconds // size} {name}s"
    return "second" if seconds == 1 else f"{seconds} seconds"
