"""The SSRF guard: webhook URLs go to public http(s) addresses unless the operator allows private ones."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from app.core.errors import InvalidRequest


def _refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and _refused(ip.ipv4_mapped))
    )


def check_url(url: str, *, allow_private: bool) -> None:
    """InvalidRequest (`webhook_url_refused`) for a URL that is not http(s), has credentials, or whose host
    resolves to a private, loopback, link-local, multicast or reserved address (every address must pass)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or IPv6 literal
        raise InvalidRequest(f"the webhook url is malformed: {exc}", param="url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("the webhook url must be http:// or https:// with a host", param="url")
    if parts.username or parts.password:
        raise InvalidRequest("the webhook url must not carry credentials", param="url")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError, ValueError) as exc:
        raise InvalidRequest(
            f"the webhook host {parts.hostname!r} does not resolve", param="url", code="webhook_url_refused"
        ) from exc
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if _refused(ip):
            raise InvalidRequest(
                f"the webhook host {parts.hostname!r} resolves to a private or loopback address ({ip}); "
                "the operator may allow those with FTGUARD_WEBHOOK_ALLOW_PRIVATE=true",
                param="url",
                code="webhook_url_refused",
            )
