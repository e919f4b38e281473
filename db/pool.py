"""One psycopg connection pool per process, shared by the server and the providers.

Connections are in autocommit mode: most statements are single reads or writes and
need no BEGIN/COMMIT round trips; code that needs a transaction opens one with
`conn.transaction()`."""

from __future__ import annotations

import os
import threading

from psycopg import Connection
from psycopg_pool import ConnectionPool

_pools: dict[str, ConnectionPool] = {}
_lock = threading.Lock()


def _configure(conn: Connection) -> None:
    # Page queries do ~1 ms of work: parallel workers and JIT only add start-up cost to them.
    conn.execute("SET max_parallel_workers_per_gather = 0")
    conn.execute("SET jit = off")


def get_pool(database_url: str | None = None) -> ConnectionPool:
    """The pool for `database_url` (default: $DATABASE_URL), opened on first use."""
    url = database_url or os.environ["DATABASE_URL"]
    pool = _pools.get(url)
    if pool is None:
        with _lock:
            pool = _pools.get(url)
            if pool is None:
                pool = ConnectionPool(url, min_size=1, max_size=int(os.environ.get("CANOPY_DB_POOL", "8")),
                                      configure=_configure, open=True, timeout=10,
                                      kwargs={"connect_timeout": 5, "autocommit": True})
                _pools[url] = pool
    return pool


def close_pools() -> None:
    with _lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
