"""OGC API - Processes callbacks (`subscriber` URIs), refusing addresses inside the
network (loopback, link-local, private) unless CANOPY_CALLBACKS_ALLOW_PRIVATE=1, so a
job cannot be used to reach services that are not meant to be reachable."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from urllib.parse import urlparse

import requests

log = logging.getLogger("canopy.jobs")
KEYS = ("successUri", "inProgressUri", "failedUri")


def _allow_private() -> bool:
    return os.environ.get("CANOPY_CALLBACKS_ALLOW_PRIVATE", "") in ("1", "true", "yes")


def check_url(url: str) -> None:
    """Raise ValueError unless `url` is an http(s) URL of a public address."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"callback {url!r} must be an http(s) URL")
    if _allow_private():
        return
    try:
        infos = socket.getaddrinfo(parsed.hostname, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        raise ValueError(f"callback host {parsed.hostname!r} does not resolve")
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved or ip.is_multicast \
                or ip.is_unspecified:
            raise ValueError(f"callback {url!r} points inside the network ({ip}); refused")


def validate(subscriber: object) -> dict | None:
    if subscriber is None:
        return None
    if not isinstance(subscriber, dict) or "successUri" not in subscriber or set(subscriber) - set(KEYS):
        raise ValueError(f"subscriber must be an object with successUri and optionally {', '.join(KEYS[1:])}")
    for key in KEYS:
        if key in subscriber:
            check_url(str(subscriber[key]))
    return {k: str(v) for k, v in subscriber.items()}


def notify(subscriber: dict | None, key: str, body: dict) -> None:
    url = (subscriber or {}).get(key)
    if not url:
        return
    try:
        check_url(url)                      # again: DNS may have changed since submission
        requests.post(url, json=body, timeout=5, allow_redirects=False)
    except (ValueError, requests.RequestException) as err:
        log.warning("callback %s to %s failed: %s", key, url, err)
