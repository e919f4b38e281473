"""What a committed job transition implies for other jobs, done once it is committed
(store.Changes): a released fan-out parent is queued again; a parent failed by one
of its tiles announces it and tells its subscriber; a fan-out that ended frees the
parts its tiles shared; jobs dismissed along the way end their event streams; the
files of runs removed (a dismissed successful job) are deleted."""

from __future__ import annotations

from ..settings import Settings
from ..storage import storage_of
from . import callbacks, events
from .context import parts_prefix
from .queue import enqueue
from .store import Changes


def follow_up(changes: Changes, settings: Settings) -> None:
    for job_id, progress in changes.dismissed:
        events.publish(job_id, "dismissed", progress, "dismissed")
    if changes.released:
        enqueue(changes.released)          # if this is lost, the reaper requeues the accepted parent
    if changes.failed:
        parent_id, progress, message, subscriber = changes.failed
        events.publish(parent_id, "failed", progress, message)
        callbacks.notify(subscriber, "failedUri", {"jobID": parent_id, "status": "failed", "message": message},
                         allow_private=settings.callbacks_allow_private)
    for parent_id in changes.ended:
        storage_of(settings).delete_prefix(parts_prefix(parent_id))
    for key in changes.files:
        storage_of(settings).delete(key)
