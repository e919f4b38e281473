"""Jobs in PostGIS: their state machine, progress, heartbeats and dead letters.

accepted → running → successful | failed | dismissed; a running job whose worker
died goes back to accepted (the reaper) for a bounded number of attempts; any job,
finished or not, can be dismissed (its results are then removed, and a successful
job's run with its rows; its files go after the commit, see Changes.files).
Every transition is one conditional UPDATE, so two workers or a worker and a
dismissal can never both win. A run is known by the job's `attempts` when it claimed
it: a worker's heartbeat, progress, retry, failure and commit apply only while the job
is still running that attempt, so a run the reaper took for dead (and requeued) can
neither keep the job alive nor finish it beside the run that replaced it.

Fan-out: a parent job waits (running, no heartbeat) while its child jobs (tiles) run.
Every final transition of a child — successful, failed, reaped, dismissed — settles
its parent in the same transaction (`settle_parent`): the parent goes back to the
queue once every child succeeded, and fails (its other children dismissed) as soon
as one cannot succeed. A transaction that changes a child locks its parent's row
first, so concurrent children settle one after the other and never deadlock.
What must happen after the commit (queueing, events) is returned as `Changes`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import Connection, sql

from db.access import Principal, visible_projects, writable_projects
from db.pool import get_pool

from ..runs.store import delete_run

FINAL = ("successful", "failed", "dismissed")
_COLS = ("identifier, process_id, status, progress, message, created, job_start_datetime, job_end_datetime, "
         "updated, owner_id, project_id, inputs, results, attempts, error, huey_task_id, parent_id, tile_index")


@dataclass
class Changes:
    """What a committed transition implies for other jobs: a parent released (to queue
    again) or failed (with its message and subscriber), jobs dismissed with it, and
    fan-outs that ended (their shared parts can go)."""

    released: str | None = None
    failed: tuple[str, int, str, dict | None] | None = None     # (parent id, progress, message, subscriber)
    dismissed: list[tuple[str, int]] = field(default_factory=list)   # (job id, progress)
    ended: list[str] = field(default_factory=list)             # fan-out parents now final
    files: list[str] = field(default_factory=list)             # storage keys of runs removed

    def __or__(self, other: "Changes") -> "Changes":
        return Changes(self.released or other.released, self.failed or other.failed,
                       self.dismissed + other.dismissed, self.ended + other.ended, self.files + other.files)


def _row(r) -> dict[str, Any]:
    keys = ("id", "process_id", "status", "progress", "message", "created", "started", "finished", "updated",
            "owner_id", "project_id", "inputs", "results", "attempts", "error", "huey_task_id", "parent_id",
            "tile_index")
    return dict(zip(keys, r))


def visible(principal: Principal | None) -> sql.Composable:
    """Jobs a caller may see: their own, and those of projects they may read."""
    if principal is not None and principal.is_admin:
        return sql.SQL("TRUE")
    own = sql.SQL("owner_id = {}").format(sql.Literal(principal.user_id)) if principal else sql.SQL("FALSE")
    if principal is not None and principal.project_scope is not None:   # a project-scoped token
        own = sql.SQL("FALSE")
    return sql.SQL("({} OR (project_id IS NOT NULL AND {}))").format(own, visible_projects(principal))


def may_dismiss(principal: Principal | None, job: dict) -> bool:
    if principal is None:
        return False
    if principal.is_admin or job["owner_id"] == principal.user_id:
        return True
    if job["project_id"] is None:
        return False
    stmt = sql.SQL("SELECT EXISTS (SELECT 1 FROM projects WHERE id = {} AND {})").format(
        sql.Literal(job["project_id"]), writable_projects(principal, column="id"))
    with get_pool().connection() as conn:
        return bool(conn.execute(stmt).fetchone()[0])


def new_id() -> str:
    return uuid.uuid4().hex


def create(process_id: str, inputs: dict, owner_id: int | None, project_id: int | None,
           subscriber: dict | None = None, *, job_id: str | None = None, task_id: str | None = None) -> dict:
    """A new job, `accepted`; returns its row."""
    with get_pool().connection() as conn:
        row = conn.execute(f"INSERT INTO jobs (identifier, process_id, status, progress, message, owner_id, "
                           f"project_id, inputs, huey_task_id) VALUES (%s, %s, 'accepted', 0, 'queued', %s, %s, %s, "
                           f"%s) RETURNING {_COLS}",
                           (job_id or new_id(), process_id, owner_id, project_id,
                            json.dumps({"inputs": inputs, "subscriber": subscriber}), task_id)).fetchone()
    return _row(row)


def get(job_id: str, principal: Principal | None = None, *, check: bool = True) -> dict | None:
    where = visible(principal) if check else sql.SQL("TRUE")
    stmt = sql.SQL(f"SELECT {_COLS} FROM jobs WHERE identifier = {{}} AND {{}}").format(sql.Literal(job_id), where)
    with get_pool().connection() as conn:
        row = conn.execute(stmt).fetchone()
    return _row(row) if row else None


def final_among(job_ids: list[str]) -> list[dict]:
    """The rows of those of `job_ids` that are in a final state (event streams re-read
    all their jobs with this one query)."""
    with get_pool().connection() as conn:
        rows = conn.execute(f"SELECT {_COLS} FROM jobs WHERE identifier = ANY(%s) AND status = ANY(%s)",
                            (job_ids, list(FINAL))).fetchall()
    return [_row(r) for r in rows]


def page(principal: Principal | None, *, process_id: str | None, status: str | None, limit: int,
         before: tuple[datetime, str] | None) -> list[dict]:
    """Newest first; `before` is the (created, id) of the last job of the previous page."""
    where = [visible(principal)]
    if process_id:
        where.append(sql.SQL("process_id = {}").format(sql.Literal(process_id)))
    if status:
        where.append(sql.SQL("status = {}").format(sql.Literal(status)))
    if before:
        where.append(sql.SQL("(created, identifier) < ({}, {})").format(sql.Literal(before[0]),
                                                                        sql.Literal(before[1])))
    stmt = sql.SQL(f"SELECT {_COLS} FROM jobs WHERE {{}} ORDER BY created DESC, identifier DESC LIMIT {{}}").format(
        sql.SQL(" AND ").join(where), sql.Literal(limit + 1))
    with get_pool().connection() as conn:
        return [_row(r) for r in conn.execute(stmt).fetchall()]


def set_task(job_id: str, task_id: str) -> None:
    with get_pool().connection() as conn:
        conn.execute("UPDATE jobs SET huey_task_id = %s WHERE identifier = %s", (task_id, job_id))


def claim(job_id: str) -> dict | None:
    """accepted → running for this worker; None when the job is not (or no longer) queued."""
    with get_pool().connection() as conn:
        row = conn.execute(
            f"UPDATE jobs SET status = 'running', attempts = attempts + 1, heartbeat_at = now(), updated = now(), "
            f"job_start_datetime = coalesce(job_start_datetime, now()), message = 'running' "
            f"WHERE identifier = %s AND status = 'accepted' RETURNING {_COLS}", (job_id,)).fetchone()
    return _row(row) if row else None


def heartbeat(job_id: str, attempt: int) -> str | None:
    """Refresh the heartbeat of a running job's `attempt`; returns the job's status (to
    notice dismissal), or 'lost' when the job no longer runs that attempt (the reaper
    requeued it: another attempt runs it or will). A job waiting for its tiles has no
    heartbeat and gets none."""
    with get_pool().connection() as conn:
        row = conn.execute("UPDATE jobs SET heartbeat_at = now() WHERE identifier = %s AND status = 'running' "
                           "AND attempts = %s AND heartbeat_at IS NOT NULL RETURNING status",
                           (job_id, attempt)).fetchone()
        if row:
            return row[0]
        row = conn.execute("SELECT status, attempts FROM jobs WHERE identifier = %s", (job_id,)).fetchone()
    if row is None:
        return None
    status, attempts = row
    return "lost" if attempts != attempt or status == "accepted" else status


def progress(job_id: str, attempt: int, percent: int, message: str) -> dict | None:
    """Record a running attempt's progress; None when the job no longer runs it."""
    with get_pool().connection() as conn:
        row = conn.execute("UPDATE jobs SET progress = %s, message = %s, updated = now() "
                           "WHERE identifier = %s AND status = 'running' AND attempts = %s "
                           "RETURNING status, progress, message, updated",
                           (percent, message[:500], job_id, attempt)).fetchone()
    return dict(zip(("status", "progress", "message", "updated"), row)) if row else None


def requeue(job_id: str, attempt: int, message: str) -> bool:
    """running → accepted (for a retry or after a worker stopped); False if the job is
    final or no longer runs `attempt`."""
    with get_pool().connection() as conn:
        row = conn.execute("UPDATE jobs SET status = 'accepted', message = %s, updated = now() "
                           "WHERE identifier = %s AND status = 'running' AND attempts = %s RETURNING 1",
                           (message, job_id, attempt)).fetchone()
    return row is not None


def fail(job_id: str, attempt: int, message: str, *, traceback: str | None = None,
         dead_letter: bool = False) -> Changes | None:
    """Fail the job whose `attempt` found it cannot finish; None (and nothing done) when
    the job no longer runs that attempt."""
    with get_pool().connection() as conn, conn.transaction():
        parent_id = lock_parent(conn, job_id)
        row = conn.execute("UPDATE jobs SET status = 'failed', message = %s, error = %s, traceback = %s, "
                           "updated = now(), job_end_datetime = now() WHERE identifier = %s "
                           "AND status = 'running' AND attempts = %s RETURNING process_id, inputs, attempts",
                           (message[:2000], message, traceback, job_id, attempt)).fetchone()
        if row and dead_letter:
            conn.execute("INSERT INTO dead_letters (job_id, process_id, inputs, error, traceback, attempts) "
                         "VALUES (%s, %s, %s, %s, %s, %s)",
                         (job_id, row[0], json.dumps(row[1]), message, traceback, row[2]))
        return settle_parent(conn, parent_id) if row else None


def dismiss(job_id: str) -> tuple[str | None, Changes]:
    """Dismiss a job in any state (OGC API - Processes /req/dismiss), with its child jobs:
    queued and running ones stop, finished ones lose their results. Returns the status
    the job had (None if there is no such job) and what follows for other jobs."""
    with get_pool().connection() as conn, conn.transaction():
        parent_id = lock_parent(conn, job_id)
        old = conn.execute("SELECT status FROM jobs WHERE identifier = %s FOR UPDATE", (job_id,)).fetchone()
        if old is None:
            return None, Changes()
        children = conn.execute(
            "UPDATE jobs SET status = 'dismissed', message = 'dismissed with its parent', results = NULL, "
            "updated = now(), job_end_datetime = coalesce(job_end_datetime, now()) "
            "WHERE parent_id = %s AND status <> 'dismissed' RETURNING identifier, progress", (job_id,)).fetchall()
        has_children = conn.execute("SELECT EXISTS (SELECT 1 FROM jobs WHERE parent_id = %s)", (job_id,)).fetchone()[0]
        changes = Changes(dismissed=[(r[0], r[1]) for r in children], ended=[job_id] if has_children else [])
        if old[0] == "dismissed":
            return old[0], changes
        conn.execute("UPDATE jobs SET status = 'dismissed', message = 'dismissed', results = NULL, updated = now(), "
                     "job_end_datetime = coalesce(job_end_datetime, now()) WHERE identifier = %s", (job_id,))
        if old[0] == "successful":                 # its run goes: rows now, files after the commit
            changes.files += delete_run(conn, job_id)
        return old[0], changes | settle_parent(conn, parent_id)


def lost_in_queue(older_than: float) -> list[str]:
    """Queued jobs that nothing will run: called only when the queue and the schedule are
    empty, so a job still `accepted` after `older_than` seconds lost its task (Huey has no
    acknowledgement: a worker killed between popping a task and claiming its job loses it).
    Each row is taken by one reaper at a time (its `updated` is moved on)."""
    with get_pool().connection() as conn:
        rows = conn.execute("UPDATE jobs SET updated = now(), message = 'requeued: its queued task was lost' "
                            "WHERE status = 'accepted' AND updated < now() - make_interval(secs => %s) "
                            "RETURNING identifier", (older_than,)).fetchall()
    return [r[0] for r in rows]


def reap(stale_seconds: float, max_attempts: int) -> list[tuple[str, str, int, Changes]]:
    """Running jobs whose heartbeat went stale (their worker died): back to accepted,
    or failed with a dead letter after the last attempt (which settles a tile's parent).
    Returns (job id, new status, progress, what follows) for each."""
    with get_pool().connection() as conn:
        stale = [r[0] for r in conn.execute(
            "SELECT identifier FROM jobs WHERE status = 'running' AND heartbeat_at < now() - "
            "make_interval(secs => %s)", (stale_seconds,)).fetchall()]
        reaped = []
        for job_id in stale:
            with conn.transaction():
                parent_id = lock_parent(conn, job_id)
                row = conn.execute(
                    "UPDATE jobs SET status = CASE WHEN attempts >= %s THEN 'failed' ELSE 'accepted' END, "
                    "message = CASE WHEN attempts >= %s THEN 'failed: the worker stopped responding on every attempt' "
                    "ELSE 'requeued: the worker stopped responding' END, updated = now(), "
                    "job_end_datetime = CASE WHEN attempts >= %s THEN now() END "
                    "WHERE identifier = %s AND status = 'running' AND heartbeat_at < now() - make_interval(secs => %s) "
                    "RETURNING status, process_id, inputs, attempts, progress",
                    (max_attempts, max_attempts, max_attempts, job_id, stale_seconds)).fetchone()
                if row is None:                         # it came back to life, or another reaper took it
                    continue
                status, process_id, inputs, attempts, progress = row
                changes = Changes()
                if status == "failed":
                    conn.execute("INSERT INTO dead_letters (job_id, process_id, inputs, error, attempts) "
                                 "VALUES (%s, %s, %s, 'worker lost on every attempt', %s)",
                                 (job_id, process_id, json.dumps(inputs), attempts))
                    changes = settle_parent(conn, parent_id)
                reaped.append((job_id, status, progress, changes))
    return reaped


# -- fan-out: a parent job and its child jobs ------------------------------------------------------

def children(parent_id: str) -> list[dict]:
    with get_pool().connection() as conn:
        rows = conn.execute(f"SELECT {_COLS} FROM jobs WHERE parent_id = %s ORDER BY tile_index", (parent_id,))
        return [_row(r) for r in rows.fetchall()]


def create_children(parent: dict, process_id: str, inputs: list[dict], ids: list[str], task_ids: list[str]) -> None:
    with get_pool().connection() as conn, conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO jobs (identifier, process_id, status, progress, message, owner_id, project_id, inputs, "
                "huey_task_id, parent_id, tile_index) VALUES (%s, %s, 'accepted', 0, 'queued', %s, %s, %s, %s, %s, %s)",
                [(i, process_id, parent["owner_id"], parent["project_id"], json.dumps({"inputs": inp}), t,
                  parent["id"], n) for n, (i, inp, t) in enumerate(zip(ids, inputs, task_ids))])


def wait_for_children(job_id: str, n: int) -> Changes:
    """The parent gives its worker back: no heartbeat (the reaper leaves it alone); its
    children settle it when they end. Children that ended before it started waiting
    settle it here."""
    with get_pool().connection() as conn, conn.transaction():
        row = conn.execute("UPDATE jobs SET heartbeat_at = NULL, message = %s, updated = now() "
                           "WHERE identifier = %s AND status = 'running' RETURNING 1",
                           (f"waiting for {n} tiles", job_id)).fetchone()
        return settle_parent(conn, job_id) if row else Changes()


def lock_parent(conn: Connection, job_id: str) -> str | None:
    """Lock the parent of `job_id` (if it has one) for this transaction; returns its id.
    Every transaction that changes a child's status calls this first."""
    row = conn.execute("SELECT parent_id FROM jobs WHERE identifier = %s", (job_id,)).fetchone()
    if not row or not row[0]:
        return None
    conn.execute("SELECT 1 FROM jobs WHERE identifier = %s FOR UPDATE", (row[0],))
    return row[0]


def settle_parent(conn: Connection, parent_id: str | None) -> Changes:
    """After a child of `parent_id` ended (its row locked by `lock_parent`): a waiting parent whose
    children all succeeded goes back to the queue to merge them; one with a failed or
    dismissed child fails, and its other children are dismissed. A parent not waiting
    (still fanning out, or already final) is left alone: it settles itself when it
    starts waiting (`wait_for_children`), or has nothing to wait for."""
    if parent_id is None:
        return Changes()
    parent = conn.execute("SELECT status, heartbeat_at IS NULL, inputs->'subscriber', progress FROM jobs "
                          "WHERE identifier = %s", (parent_id,)).fetchone()
    if parent is None or parent[0] != "running" or not parent[1]:
        return Changes()
    kids = conn.execute("SELECT tile_index, status, message FROM jobs WHERE parent_id = %s ORDER BY tile_index",
                        (parent_id,)).fetchall()
    broken = next((k for k in kids if k[1] in ("failed", "dismissed")), None)
    if broken:
        index, status, message = broken
        why = f"tile {index} failed: {message}" if status == "failed" else f"tile {index} was dismissed"
        conn.execute("UPDATE jobs SET status = 'failed', message = %s, error = %s, updated = now(), "
                     "job_end_datetime = now() WHERE identifier = %s", (why[:2000], why, parent_id))
        others = conn.execute("UPDATE jobs SET status = 'dismissed', message = 'dismissed: another tile failed', "
                              "updated = now(), job_end_datetime = now() "
                              "WHERE parent_id = %s AND status IN ('accepted', 'running') "
                              "RETURNING identifier, progress", (parent_id,)).fetchall()
        return Changes(failed=(parent_id, parent[3], why, parent[2]), dismissed=[(r[0], r[1]) for r in others],
                       ended=[parent_id])
    if kids and all(k[1] == "successful" for k in kids):
        conn.execute("UPDATE jobs SET status = 'accepted', attempts = 0, message = 'merging tiles', updated = now() "
                     "WHERE identifier = %s", (parent_id,))
        return Changes(released=parent_id)
    return Changes()


def parent_progress(parent_id: str, share: float = 0.85) -> dict | None:
    """A waiting parent's progress is the mean of its children's (scaled into `share`)."""
    with get_pool().connection() as conn:
        row = conn.execute(
            "UPDATE jobs p SET progress = (SELECT least(99, (avg(c.progress) * %s)::int) FROM jobs c "
            "WHERE c.parent_id = p.identifier), updated = now() WHERE p.identifier = %s AND p.status = 'running' "
            "RETURNING progress, message", (share, parent_id)).fetchone()
    return {"progress": row[0], "message": row[1]} if row else None
