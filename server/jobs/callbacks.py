"""OGC API - Processes callbacks (`subscriber` URIs).

A callback is an HTTP request the server makes on a client's behalf, so it must not
reach anything that is not on the public internet: only globally routable addresses
(`ipaddress.is_global`: not loopback, private, link-local, shared 100.64/10,
documentation or reserved ranges) are accepted, unless the deployment allows private
ones (`CANOPY_CALLBACKS_ALLOW_PRIVATE=1`, for tests and closed networks). The host is
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


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
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
