"""One psycopg connection pool per process, shared by the server and the providers.

Connections are in autocommit mode: most statements are single reads or writes and
need no BEGIN/COMMIT round trips; code that needs a transaction opens one with
`conn.transaction()`."""

from __future__ import annotations

import os
import threading

from psycopg import Connection
from psycopg_pool import ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from server.settings import get_settings

# Reconnect to a lost PostgreSQL every second: psycopg_pool doubles the wait without a
# bound, so after a 30 s outage a pool would stay empty for ~30 s more (503s long after
# the database is back). A connection attempt a second per process costs nothing.
AttemptWithBackoff.DELAY_BACKOFF = 1.0

_pools: dict[str, ConnectionPool] = {}
_lock = threading.Lock()


def _configure(conn: Connection) -> None:
    # Page queries do ~1 ms of work: parallel workers and JIT only add start-up cost to them.
    conn.execute("SET max_parallel_workers_per_gather = 0")
    conn.execute("SET jit = off")


def get_pool(database_url: str | None = None) -> ConnectionPool:
    """The pool for `database_url` (default: $DATABASE_URL), opened on first use."""
    url = database_url or os.environ["DATABASE_URL"]     # read each time: `canopy run` sets it late
    pool = _pools.get(url)
    if pool is None:
        with _lock:
            pool = _pools.get(url)
            if pool is None:
                # A request waits at most CANOPY_DB_POOL_TIMEOUT (2 s) for a connection, then
                # answers 503 (PoolTimeout); each connection is checked when it is handed out, so
                # after a PostgreSQL restart no request gets a dead one.
                settings = get_settings()
                pool = ConnectionPool(url, min_size=1, max_size=settings.db_pool,
                                      configure=_configure, open=True, timeout=settings.db_pool_timeout,
                                      check=ConnectionPool.check_connection,
                                      kwargs={"connect_timeout": 2, "autocommit": True})
                _pools[url] = pool
    return pool


def close_pools() -> None:
    with _lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
