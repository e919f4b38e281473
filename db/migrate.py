"""Applies the numbered SQL files in db/migrations once each, in order, each in a transaction.

Applied files are recorded in `schema_migrations` with their checksum; an advisory
lock makes concurrent runners (several web processes starting at once) safe.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x63616E6F  # "cano"


def pending(conn: psycopg.Connection) -> list[Path]:
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    return [p for p in sorted(MIGRATIONS.glob("*.sql")) if p.name not in done]


def migrate(database_url: str) -> list[str]:
    """Apply every pending migration; return the names applied."""
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
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
