"""Applies the numbered SQL files in db/migrations once each, in order, each in a transaction.

Applied files are recorded in `schema_migrations` with their checksum; an advisory
lock makes concurrent runners (several web processes starting at once) safe.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import psycopg

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x63616E6F  # "cano"


def pending(conn: psycopg.Connection) -> list[Path]:
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    return [p for p in sorted(MIGRATIONS.glob("*.sql")) if p.name not in done]


def connect(database_url: str, wait: float = 0, log: Callable[[str], None] = print) -> psycopg.Connection:
    """A connection that has answered a query, retried for up to `wait` seconds while the
    server refuses or is starting: a database container may accept connections only some
    seconds after it started (the PostGIS image runs its init scripts on a socket-only
    server first), so a deployment's migration step waits instead of failing once."""
    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        try:
            conn = psycopg.connect(database_url, autocommit=True, connect_timeout=5)
            conn.execute("SELECT 1")
            return conn
        except psycopg.OperationalError as err:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = lines[0] if lines else type(err).__name__
            log(f"database not ready ({reason}); retrying for {left:.0f} s more")
            time.sleep(min(delay, max(left, 0.1)))
            delay = min(delay * 2, 5.0)


def migrate(database_url: str, wait: float = 0, log: Callable[[str], None] = print) -> list[str]:
    """Apply every pending migration (waiting up to `wait` seconds for the database to
    accept connections); return the names applied."""
    applied: list[str] = []
    with connect(database_url, wait, log) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                name text PRIMARY KEY, sha256 text NOT NULL,
                                applied_at timestamptz NOT NULL DEFAULT now())""")
            for path in pending(conn):
                sql = path.read_text()
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (name, sha256) VALUES (%s, %s)",
                                 (path.name, hashlib.sha256(sql.encode()).hexdigest()))
                applied.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied
