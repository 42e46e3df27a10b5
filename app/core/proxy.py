"""Whom to believe about the original request behind a reverse proxy (`Settings.trusted_proxies`).

A TLS-terminating proxy talks plain HTTP to ftguard and says what the client used in `X-Forwarded-Proto`.
Any client can send that header, so it counts only when the peer is a proxy the operator named.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import Request

from app.core.config import Settings


@lru_cache(maxsize=64)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def is_trusted(settings: Settings, host: str | None) -> bool:
    """Whether `host` (the TCP peer) is one of the operator's reverse proxies."""
    if not host or not settings.trusted_proxies:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in _networks(tuple(settings.trusted_proxies)))


def is_https(request: Request, settings: Settings) -> bool:
    """Whether the client reached us over TLS: directly, or through a trusted proxy that says so."""
    if request.url.scheme == "https":
        return True
    if not is_trusted(settings, request.client.host if request.client else None):
        return False
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return proto == "https"


def cookie_secure(request: Request, settings: Settings) -> bool:
    """The sign-in cookie's `Secure` flag: forced by `cookie_secure`, else whether the request was https."""
    return settings.cookie_secure or is_https(request, settings)
