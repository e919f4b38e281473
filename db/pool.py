"""One psycopg connection pool per process, shared by the server and the providers.

Connections are in autocommit mode: most statements are single reads or writes and
need no BEGIN/COMMIT round trips; code that needs a transaction opens one with
`conn.transaction()`.

Per process means per process: a forked child forgets the pools it inherited (their
sockets are its parent's sessions, their threads did not survive the fork) and opens
its own on first use. It never closes them either: that would end the parent's sessions."""

from __future__ import annotations

import os
import threading
import time

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
_inherited: list[ConnectionPool] = []     # a child's copies of its parent's pools: kept, never used or closed


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()                 # it may have been held by a thread of the parent
    _inherited.extend(_pools.values())       # collected, a pool would wait for threads this process does not have;
    _pools.clear()                           # kept, it costs a few file descriptors


os.register_at_fork(after_in_child=_after_fork_in_child)


def _configure(conn: Connection) -> None:
    # Page queries do ~1 ms of work: parallel workers and JIT only add start-up cost to them.
    conn.execute("SET max_parallel_workers_per_gather = 0")
    conn.execute("SET jit = off")


IDLE_CHECK_SECONDS = 1.0


def _returned(conn: Connection) -> None:
    conn._canopy_returned = time.monotonic()     # type: ignore[attr-defined]


def _check(conn: Connection) -> None:
    """Check a connection about to be handed out, unless it served a request less than a
    second ago: a restart of PostgreSQL leaves idle connections dead, while a busy server's
    connections are proven alive by their last use, and a round trip before every request
    would cost a busy server more than its page queries' planning."""
    if time.monotonic() - getattr(conn, "_canopy_returned", 0.0) >= IDLE_CHECK_SECONDS:
        ConnectionPool.check_connection(conn)


def get_pool(database_url: str | None = None) -> ConnectionPool:
    """The pool for `database_url` (default: $DATABASE_URL), opened on first use."""
    url = database_url or os.environ["DATABASE_URL"]     # read each time: `canopy run` sets it late
    pool = _pools.get(url)
    if pool is None:
        with _lock:
            pool = _pools.get(url)
            if pool is None:
                # A request waits at most CANOPY_DB_POOL_TIMEOUT (2 s) for a connection, then
                # answers 503 (PoolTimeout); each connection idle for a second is checked when it is
                # handed out, so after a PostgreSQL restart no request gets a dead one.
                settings = get_settings()
                pool = ConnectionPool(url, min_size=1, max_size=settings.db_pool,
                                      configure=_configure, open=True, timeout=settings.db_pool_timeout,
                                      check=_check, reset=_returned,
                                      kwargs={"connect_timeout": 2, "autocommit": True})
                _pools[url] = pool
    return pool


def close_pools() -> None:
    with _lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
