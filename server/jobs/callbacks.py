"""OGC API - Processes callbacks (`subscriber` URIs).

A callback is an HTTP request the server makes on a client's behalf, so it must not
reach anything that is not on the public internet: only globally routable addresses
(`ipaddress.is_global`: not loopback, private, link-local, shared 100.64/10,
documentation or reserved ranges) are accepted, unless the deployment allows private
ones (`CANOPY_CALLBACKS_ALLOW_PRIVATE=1`, for tests and closed networks). An IPv6
address that carries an IPv4 one (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d,
NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32) is public only if that IPv4 address
is too; the local-use NAT64 prefix 64:ff9b:1::/48 never is (nor Teredo: `is_global`
counts all of 2001::/23 out). The host is
resolved once per request and the connection is made to the address that was
checked (TLS still verifies the host name), so DNS cannot answer differently between
the check and the connection (rebinding). Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

import urllib3

log = logging.getLogger("canopy.jobs")
KEYS = ("successUri", "inProgressUri", "failedUri")
TIMEOUT = 5.0


@dataclass(frozen=True)
class Target:
    """A callback URL with the address it was checked against."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")              # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")       # RFC 8215: local use, never global
_COMPATIBLE = ipaddress.IPv6Network("::/96")                 # RFC 4291's deprecated IPv4-compatible ::a.b.c.d


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo),
    which a translator or tunnel may deliver to."""
    last32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    carried = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ()),
               last32 if ip in _NAT64 or ip in _COMPATIBLE else None]
    return [v4 for v4 in carried if v4 is not None]


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable, and so is every IPv4 address it carries."""
    if ip.version == 6 and (ip in _NAT64_LOCAL or not all(map(_is_public, _embedded_ipv4(ip)))):
        return False
    return ip.is_global and not ip.is_multicast


def resolve(url: str, *, allow_private: bool = False) -> Target:
    """Check `url` and pin the address to connect to; ValueError if it is not an
    http(s) URL of a public address."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"callback {url!r} must be an http(s) URL")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"callback {url!r} has an invalid port")
    try:
        infos = socket.getaddrinfo(parsed.hostname, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise ValueError(f"callback host {parsed.hostname!r} does not resolve")
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise ValueError(f"callback host {parsed.hostname!r} does not resolve")
    if not allow_private:
        for ip in addresses:
            if not _is_public(ip):
                raise ValueError(f"callback {url!r} points inside the network ({ip}); refused")
    path = parsed.path or "/"
    if parsed.query:
        path += f"?{parsed.query}"
    return Target(parsed.scheme, parsed.hostname, port, path, str(addresses[0]))


def validate(subscriber: object, *, allow_private: bool = False) -> dict | None:
    if subscriber is None:
        return None
    if not isinstance(subscriber, dict) or "successUri" not in subscriber or set(subscriber) - set(KEYS):
        raise ValueError(f"subscriber must be an object with successUri and optionally {', '.join(KEYS[1:])}")
    for key in KEYS:
        if key in subscriber:
            resolve(str(subscriber[key]), allow_private=allow_private)
    return {k: str(v) for k, v in subscriber.items()}


def post(target: Target, body: dict, timeout: float = TIMEOUT) -> int:
    """POST `body` as JSON to the pinned address; returns the status (a redirect is
    returned, not followed)."""
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(target.address, target.port, server_hostname=target.host,
                                           assert_hostname=target.host, cert_reqs="CERT_REQUIRED",
                                           timeout=timeout, retries=False)
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False)
    default_port = 443 if target.scheme == "https" else 80
    host = target.host if ":" not in target.host else f"[{target.host}]"
    headers = {"Host": host if target.port == default_port else f"{host}:{target.port}",
               "Content-Type": "application/json", "User-Agent": "canopy-callbacks"}
    try:
        response = pool.urlopen("POST", target.path, body=json.dumps(body, default=str).encode(),
                                headers=headers, redirect=False, retries=False, assert_same_host=False)
        return response.status
    finally:
        pool.close()


def notify(subscriber: dict | None, key: str, body: dict, *, allow_private: bool = False,
           timeout: float = TIMEOUT) -> int | None:
    """Best effort: the callback's status, or None when it was refused or failed."""
    url = (subscriber or {}).get(key)
    if not url:
        return None
    try:
        target = resolve(url, allow_private=allow_private)  # again: DNS may have changed since submission
        status = post(target, body, timeout)
    except (ValueError, urllib3.exceptions.HTTPError, OSError) as err:
        log.warning("callback %s to %s failed: %s", key, url, err)
        return None
    if status >= 300:
        log.warning("callback %s to %s answered %s", key, url, status)
    return status
