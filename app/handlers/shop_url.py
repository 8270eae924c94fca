"""Shop URLs may only reach the public internet (no SSRF into the platform's network).

A tenant (or whoever holds its admin key) chooses a shop's `base_url`, and the consumer calls
it with the shop's key from inside the platform's network. So the host is resolved and every
address it resolves to must be public: loopback, private (RFC 1918, unique-local, CGNAT),
link-local, multicast, unspecified, reserved and cloud-metadata addresses are refused, IPv4
and IPv6 alike, including IPv4 embedded in IPv6 (mapped, compatible, NAT64, 6to4). Checked
when the shop is saved (a 422 naming the reason) and again when the consumer connects: it
resolves, checks, and connects to the address it checked (the Host header and TLS server
name stay the shop's name), so a DNS answer that changes in between (rebinding) gains
nothing. `JOBGATE_ALLOW_PRIVATE_SHOP_URLS=true` lifts the address check (development and
tests with a shop on loopback); production also requires https.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.core.config import Environment
from app.handlers.config import PrestaShopSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Instance-metadata services that answer on addresses the generic checks may not catch.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
    )
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeShopUrl(ValueError):
    """The shop URL is refused; the message says why (safe to show the tenant)."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(ip: IPAddress) -> str | None:
    """Why `ip` may not be a shop's address, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped (link-local) IPv6 address"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = refusal_reason(embedded)
            return f"{inner} (inside an IPv6 address)" if inner else None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private or ip in _SHARED, "a private address"),
        (not ip.is_global, "a non-public address"),
    )
    return next((why for hit, why in checks if hit), None)


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA), via the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ShopUrlGuard:
    """What shop URLs are allowed, and how their hosts are resolved."""

    allow_private: bool = False
    require_https: bool = False
    resolver: Resolver = field(default=system_resolve)

    @classmethod
    def from_settings(
        cls, settings: PrestaShopSettings, environment: Environment, **overrides: Any
    ) -> ShopUrlGuard:
        return cls(
            allow_private=settings.allow_private_urls,
            require_https=environment is Environment.production,
            **overrides,
        )

    def check_scheme(self, base_url: str) -> None:
        scheme = urlsplit(base_url).scheme.lower()
        if self.require_https and scheme != "https":
            raise UnsafeShopUrl("shop URLs must use https in production")

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for `host`, after checking all it resolves to."""
        literal = _literal(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self.resolver(host, port)
            except OSError as exc:
                raise LookupError(f"the shop host {host!r} does not resolve") from exc
            if not addresses:
                raise LookupError(f"the shop host {host!r} does not resolve")
        if not self.allow_private:
            for address in addresses:
                ip = ipaddress.ip_address(address)
                why = refusal_reason(ip)
                if why is not None:
                    # Every answer must be public: a client may pick any of them.
                    raise UnsafeShopUrl(
                        f"the shop host {host} resolves to {why} ({ip}), which is refused; "
                        "set JOBGATE_ALLOW_PRIVATE_SHOP_URLS=true only for development"
                    )
        return addresses[0]

    async def check_url(self, base_url: str) -> None:
        """Saving a shop: the scheme, then every address the host resolves to.

        A name that does not resolve (yet) is accepted: the check at connect time, which
        every request passes, is what protects; this one answers early with the reason."""
        self.check_scheme(base_url)
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError as exc:
            raise UnsafeShopUrl("the shop URL has an invalid port") from exc
        if self.allow_private:
            return
        with contextlib.suppress(LookupError):
            await self.resolve(host, port)

    def client(self, *, timeout: float) -> httpx.AsyncClient:
        """An HTTP client whose connections go only to checked, pinned addresses."""
        return httpx.AsyncClient(
            transport=PinnedTransport(self), timeout=timeout, follow_redirects=False
        )


class PinnedTransport(httpx.AsyncBaseTransport):
    """Resolves and checks each request's host, then connects to that very address.

    The request keeps its Host header and, for https, the TLS server name (SNI and
    certificate check) of the original host. Connection pools are keyed by address, so each
    host gets its own: a connection verified for one name never carries another's requests.
    """

    def __init__(self, guard: ShopUrlGuard, **transport_options: Any) -> None:
        self._guard = guard
        self._options = transport_options
        self._pools: dict[str, httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._guard.check_scheme(str(request.url))
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        try:
            address = await self._guard.resolve(host, port)
        except LookupError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        if _literal(host) is None:
            request.url = request.url.copy_with(host=address)
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        pool = self._pools.get(host)
        if pool is None:
            pool = self._pools[host] = httpx.AsyncHTTPTransport(**self._options)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
