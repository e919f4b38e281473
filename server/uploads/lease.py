"""One writer per upload, across gunicorn workers and machines, without holding a
database connection while a request body arrives.

A writer takes a lease on the upload's row (`writer`, `writer_until`) in one short
statement, renews it while it reads, and gives it back with its last write. A writer
whose process died holds nothing once its lease runs out (LEASE_SECONDS). Every
statement borrows a pooled connection and returns it at once, so a PATCH never holds
more than one, and none while it waits for the client's bytes.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Iterator

from db.pool import get_pool

from .tus import TusError

LEASE_SECONDS = 30.0
RENEW_SECONDS = 5.0       # renewed this often while the body is read (well inside the lease)
FINISH_SECONDS = 3600.0   # held while a complete upload is checked, hashed and published
_POLL = 0.05


class Lease:
    def __init__(self, upload_id: str, token: str):
        self.upload_id, self.token = upload_id, token
        self._renewed = time.monotonic()
        self.released = False

    def keep(self) -> None:
        """Before each write: renew the lease if it is due; refuse to write without it
        (the body stalled past the lease and another writer may own the file now)."""
        if time.monotonic() - self._renewed < RENEW_SECONDS:
            return
        with get_pool().connection() as conn:
            row = conn.execute("UPDATE uploads SET writer_until = now() + make_interval(secs => %s) "
                               "WHERE id = %s AND writer = %s RETURNING 1",
                               (LEASE_SECONDS, self.upload_id, self.token)).fetchone()
        if row is None:
            raise TusError(409, f"upload {self.upload_id}: this request took too long and lost its turn; "
                                "ask for the offset (HEAD) and resume")
        self._renewed = time.monotonic()

    def record(self, offset: int, expires, *, release: bool) -> None:
        """Store the new offset (and expiry), giving the lease back in the same statement
        when `release`; otherwise the lease is kept for the completion (FINISH_SECONDS).
        409 if the lease was lost meanwhile."""
        with get_pool().connection() as conn:
            row = conn.execute('UPDATE uploads SET "offset" = %s, expires_at = %s, '
                               "writer = CASE WHEN %s THEN NULL ELSE writer END, "
                               "writer_until = CASE WHEN %s THEN NULL "
                               "ELSE now() + make_interval(secs => %s) END "
                               "WHERE id = %s AND writer = %s RETURNING 1",
                               (offset, expires, release, release, FINISH_SECONDS, self.upload_id,
                                self.token)).fetchone()
        if row is None:
            raise TusError(409, f"upload {self.upload_id}: this request lost its turn; "
                                "ask for the offset (HEAD) and resume")
        self.released = release


def _try(upload_id: str, token: str) -> bool | None:
    """True: taken; False: someone holds it; None: no such upload."""
    with get_pool().connection() as conn:
        row = conn.execute("UPDATE uploads SET writer = %s, writer_until = now() + make_interval(secs => %s) "
                           "WHERE id = %s AND (writer IS NULL OR writer_until < now()) RETURNING 1",
                           (token, LEASE_SECONDS, upload_id)).fetchone()
        if row:
            return True
        exists = conn.execute("SELECT 1 FROM uploads WHERE id = %s", (upload_id,)).fetchone()
    return False if exists else None


@contextlib.contextmanager
def hold(upload_id: str, wait: float = 0.0) -> Iterator[Lease]:
    """The upload's lease for the block; `wait` seconds are spent waiting for a writer in
    flight (423 after that). 404 if the upload is gone."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while not (taken := _try(upload_id, token)):
        if taken is None:
            raise TusError(404, f"no upload {upload_id}")
        if time.monotonic() >= deadline:
            raise TusError(423, f"upload {upload_id} is being written by another request")
        time.sleep(_POLL)
    lease = Lease(upload_id, token)
    try:
        yield lease
    finally:
        if not lease.released:
            with get_pool().connection() as conn:
                conn.execute("UPDATE uploads SET writer = NULL, writer_until = NULL WHERE id = %s AND writer = %s",
                             (upload_id, token))


def wait_free(upload_id: str, wait: float) -> None:
    """Wait up to `wait` seconds for a writer in flight to finish (a HEAD right after a
    broken connection must see the bytes that request stored)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with get_pool().connection() as conn:
            row = conn.execute("SELECT writer IS NOT NULL AND writer_until >= now() FROM uploads WHERE id = %s",
                               (upload_id,)).fetchone()
        if not row or not row[0]:
            return
        time.sleep(_POLL)
