"""Optional Redis cache of rendered tiles, keyed by the tile's ETag (which changes with the
raster file's version and the style), so entries never need invalidation: they expire.

Off unless CANOPY_TILE_CACHE_TTL (seconds) is above 0. A Redis failure is logged and
the tile is rendered as if the cache were off: the cache may make tiles faster, never fail.
"""

from __future__ import annotations

import logging

import redis

from ..settings import get_settings

_log = logging.getLogger("canopy.tiles.cache")
_client: redis.Redis | None = None


def enabled() -> bool:
    return get_settings().tile_cache_ttl > 0


def _redis(url: str) -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _client


def get(url: str, etag: str) -> bytes | None:
    if not enabled():
        return None
    try:
        return _redis(url).get(f"canopy:tile:{etag}")
    except redis.RedisError as exc:
        _log.warning("tile cache read failed: %s", exc)
        return None


def put(url: str, etag: str, body: bytes) -> None:
    if not enabled():
        return
    try:
        _redis(url).set(f"canopy:tile:{etag}", body, ex=get_settings().tile_cache_ttl)
    except redis.RedisError as exc:
        _log.warning("tile cache write failed: %s", exc)
