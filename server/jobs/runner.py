"""Running one job on a worker: claim it, heartbeat, report progress, commit or fail.

Only Huey workers run jobs (never the web server: a synchronous execution waits on
the queue). Failures are sorted here: bad input fails the job at once with the
user's message; an outage — the database, Redis, or a store that cannot be written
(permissions, full, read-only) — is retried with backoff (after the last attempt the
job fails and a dead letter keeps inputs, error and traceback); a bug fails it with a
dead letter; a worker shutting down requeues it; a dismissal stops it cooperatively at
the next progress step and, past a grace period, through the `on_stuck` the worker
gives (the Huey task kills its worker process, which the consumer replaces). A run
the reaper took for dead and requeued stops the same way, writing nothing: the
attempt that replaced it owns the job (store: attempts).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import traceback as tb
from pathlib import Path
from typing import Callable

from processes.base import ProcessInputError, WaitForChildren
from processes.lidar.errors import LidarError

from ..errors import outage_types, unavailable
from ..settings import get_settings
from . import callbacks, commit, events, registry, store
from .context import WorkerContext
from .follow import follow_up

log = logging.getLogger("canopy.jobs")

TRANSIENT = tuple(kind for kind, _ in outage_types())


def outage(err: BaseException) -> str | None:
    """Why `err` is an outage worth retrying (server/errors.py `unavailable`), in words that
    name no server path; None when it is not one (a bug, or bad input)."""
    service = unavailable(err)
    if service == "storage":
        return f"storage unavailable: {os.strerror(err.errno).lower()}"
    if service:
        return f"{type(err).__name__}: {str(err).strip()[:300]}"
    return None


class JobDismissed(Exception):
    """Raised inside the process (from its progress callback) when the job was dismissed."""


class Heartbeat(threading.Thread):
    """Keeps a running job's heartbeat fresh (for its `attempt`) and watches for its
    dismissal, or for the job being lost to the reaper (`lost` is set too): `dismissed`
    is set at once (the process stops at its next progress step); if it has not stopped
    `grace` seconds later, `on_stuck` is called once. Stopped with `stop()`, then
    joinable like any thread. No error ends it before that: a heartbeat that stopped
    while its job runs would have the reaper take a live job for a dead one."""

    def __init__(self, job_id: str, attempt: int, *, interval: float | None = None, grace: float | None = None,
                 on_stuck: Callable[[], None] | None = None):
        super().__init__(daemon=True, name=f"heartbeat-{job_id[:8]}")
        settings = get_settings()
        self.job_id = job_id
        self.attempt = attempt
        self.interval = settings.job_heartbeat if interval is None else interval
        self.grace = settings.dismiss_grace if grace is None else grace
        self.on_stuck = on_stuck
        self.dismissed = threading.Event()
        self.lost = threading.Event()
        self._halt = threading.Event()      # not `_stop`: threading.Thread has a method of that name

    def run(self) -> None:
        dismissed_at = None
        while not self._halt.wait(self.interval):
            try:
                status = store.heartbeat(self.job_id, self.attempt)
            except Exception:
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
                continue
            if status in ("dismissed", "lost") and dismissed_at is None:
                dismissed_at = time.monotonic()
                if status == "lost":
                    log.warning("job %s: attempt %d was taken for dead and requeued; it stops", self.job_id,
                                self.attempt)
                    self.lost.set()
                self.dismissed.set()
            if dismissed_at is not None and time.monotonic() - dismissed_at > self.grace:
                log.warning("job %s ignored its %s for %.0f s", self.job_id,
                            "loss" if self.lost.is_set() else "dismissal", self.grace)
                if self.on_stuck is not None:
                    self.on_stuck()
                return

    def stop(self) -> None:
        self._halt.set()


def run_job(job_id: str, on_stuck: Callable[[], None] | None = None) -> None:
    """Run a queued job on this worker (`on_stuck`: see Heartbeat)."""
    try:
        job = store.claim(job_id)
    except TRANSIENT:
        log.warning("job %s: database unavailable at start; the reaper will requeue it", job_id)
        return
    if job is None:
        return                                   # dismissed, finished, or taken by another worker
    settings = get_settings()
    heartbeat = Heartbeat(job_id, job["attempts"], on_stuck=on_stuck)
    ctx = WorkerContext(job, settings, heartbeat.dismissed, JobDismissed)
    subscriber = (job["inputs"] or {}).get("subscriber")
    final = True
    heartbeat.start()
    try:
        events.publish(job_id, "running", 0, "running")
        _notify(subscriber, "inProgressUri", {"jobID": job_id, "status": "running"})
        processor = registry.processor(job["process_id"])
        outcome = processor.run(job["inputs"]["inputs"], ctx)
        results, changes = commit.commit(job, outcome, ctx)
        events.publish(job_id, "successful", 100, "done")
        _notify(subscriber, "successUri", results)
        follow_up(changes, settings)
    except WaitForChildren as waiting:
        follow_up(store.wait_for_children(job_id, int(str(waiting))), settings)
        final = False
    except (JobDismissed, commit.Superseded):
        if _status(job_id) == "dismissed":      # else it was requeued: the attempt that runs it now tells
            events.publish(job_id, "dismissed", job["progress"], "dismissed")
    except (ProcessInputError, LidarError) as err:
        _record_failure(job, str(err))          # first, so whoever sees the job failed sees why
        _fail(job, str(err), None, dead_letter=False, subscriber=subscriber)
    except KeyboardInterrupt:
        # Huey interrupts running tasks when the worker's shutdown grace period is over.
        try:
            if store.requeue(job_id, job["attempts"], "requeued: its worker was stopped"):
                from .queue import enqueue
                enqueue(job_id)
        finally:
            raise
    except Exception as err:
        reason = outage(err)
        if reason:
            _retry(job, reason, subscriber)
        else:                                   # a bug: fail visibly, keep everything for an operator
            log.exception("job %s failed", job_id)
            _fail(job, f"internal error: {err}", tb.format_exc(), dead_letter=True, subscriber=subscriber)
    finally:
        heartbeat.stop()
        heartbeat.join(timeout=5)
        ctx.cleanup(final=final)


def _notify(subscriber: dict | None, key: str, body: dict) -> None:
    callbacks.notify(subscriber, key, body, allow_private=get_settings().callbacks_allow_private)


def _fail(job: dict, message: str, trace: str | None, *, dead_letter: bool, subscriber: dict | None) -> None:
    try:
        changes = store.fail(job["id"], job["attempts"], message, traceback=trace,  # a tile's fails its parent
                             dead_letter=dead_letter)
    except TRANSIENT:
        return                                    # the reaper will see the stale heartbeat
    if changes is None:
        return                                    # the job no longer runs this attempt
    events.publish(job["id"], "failed", job["progress"], message)
    _notify(subscriber, "failedUri", {"jobID": job["id"], "status": "failed", "message": message})
    follow_up(changes, get_settings())


def _record_failure(job: dict, message: str) -> None:
    """Let the process record a bad-input failure on its objects (a scan that cannot be
    ingested is marked failed, with the reason)."""
    hook = getattr(registry.processor(job["process_id"]), "failure_artifacts", None)
    if hook:
        try:
            commit.apply(hook(job["inputs"]["inputs"], message), job)
        except TRANSIENT:
            log.warning("job %s: could not record its failure on its objects", job["id"])


def _status(job_id: str) -> str | None:
    try:
        job = store.get(job_id, check=False)
    except TRANSIENT:
        return None
    return job["status"] if job else None


def _retry(job: dict, message: str, subscriber: dict | None) -> None:
    """The one retry policy: again after 2, 4, 8… s (at most 60), until the job's last
    attempt; then it fails with a dead letter."""
    if job["attempts"] >= get_settings().job_attempts:
        _fail(job, f"gave up after {job['attempts']} attempts: {message}", tb.format_exc(), dead_letter=True,
              subscriber=subscriber)
        return
    delay = min(60.0, 2.0 ** job["attempts"])
    try:
        if store.requeue(job["id"], job["attempts"], f"retrying in {delay:.0f} s after a transient error: {message}"):
            from .queue import enqueue
            enqueue(job["id"], delay=delay)
    except TRANSIENT:
        log.warning("job %s: cannot requeue now (%s); the reaper will", job["id"], message)


def cleanup_workdirs(root: Path) -> int:
    """Remove the work directories of jobs that are final (left by killed workers)."""
    removed = 0
    if not root.exists():
        return 0
    for path in root.iterdir():
        job = store.get(path.name, check=False)
        if job is None or job["status"] in store.FINAL:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
