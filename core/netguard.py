"""SSRF guard for URLs taken from user-controlled documents (did:web hosts, PDS endpoints).

Only public https endpoints are allowed unless the operator explicitly allows private ones
(``VIDEO_ALLOW_PRIVATE_ENDPOINTS=1``, for development and tests). The check resolves the host
and refuses loopback, private, link-local (cloud metadata), multicast and reserved addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeEndpoint(Exception):
    pass


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
