"""SSRF guard for URLs taken from user-controlled documents (did:web hosts, PDS endpoints).

Only public https endpoints are allowed unless the operator explicitly allows private ones
(``VIDEO_ALLOW_PRIVATE_ENDPOINTS=1``, for development and tests). The check resolves the host
and refuses loopback, private, link-local (cloud metadata), multicast and reserved addresses.
:func:`pin_endpoint` also hands back the checked address to connect to, so the HTTP client does
not look the name up a second time (DNS rebinding); the hostname stays in the Host header and
in TLS verification (SNI).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# (host, port) -> addresses; injectable so tests can play DNS without touching the network.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnsafeEndpoint(Exception):
    pass


class Unresolved(UnsafeEndpoint):
    """The hostname did not resolve (now): worth another try later."""


@dataclass(frozen=True)
class PinnedUrl:
    """Where to send the request: the checked address, with the name for Host and TLS."""

    url: str
    host_header: str | None
    sni: str | None

    def headers(self) -> dict[str, str]:
        return {"host": self.host_header} if self.host_header else {}

    def extensions(self) -> dict[str, Any] | None:
        return {"sni_hostname": self.sni} if self.sni else None


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def pin_endpoint(
    url: str, *, allow_private: bool, resolve: Resolver = system_resolve
) -> PinnedUrl:
    """Check ``url`` and pin it to a checked address (path and query kept).

    With private endpoints allowed (development) the URL is used as it is. Raises
    :class:`UnsafeEndpoint`, or :class:`Unresolved` when the name does not resolve.
    """
    await check_endpoint(url, allow_private=True)  # scheme, host, no credentials
    parts = urlsplit(url)
    if allow_private:
        return PinnedUrl(urlunsplit((*parts[:4], "")), None, None)
    if parts.scheme != "https":
        raise UnsafeEndpoint(f"endpoint must use https: {url!r}")
    host = parts.hostname or ""
    port = parts.port or 443
    try:
        addrs = await resolve(host, port)
    except OSError as exc:
        raise Unresolved(f"cannot resolve {host!r}: {exc}") from None
    if not addrs:
        raise Unresolved(f"cannot resolve {host!r}")
    ips = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addrs]
    for ip in ips:
        if not is_public(ip):
            raise UnsafeEndpoint(f"{host!r} resolves to a non-public address ({ip})")
    ip = ips[0]
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    host_header = host if parts.port in (None, 443) else f"{host}:{port}"
    pinned = urlunsplit(("https", f"{literal}:{port}", parts.path, parts.query, ""))
    return PinnedUrl(pinned, host_header, host)


async def check_endpoint(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeEndpoint(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise UnsafeEndpoint("URLs with credentials are refused")
    if allow_private:
        return
    if parts.scheme != "https":
        raise UnsafeEndpoint(f"endpoint must use https: {url!r}")
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or 443, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise UnsafeEndpoint(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not is_public(addr):
            raise UnsafeEndpoint(f"{host!r} resolves to a non-public address ({addr})")


def is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return is_public(addr.ipv4_mapped)
    return addr.is_global and not (addr.is_multicast or addr.is_reserved)
