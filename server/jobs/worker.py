"""`python -m server worker`: the Huey consumer, plus the reaper.

SIGTERM is a graceful stop (containers and systemd send it): running tasks get
`CANOPY_WORKER_GRACE` seconds to finish, then they are interrupted and requeued.
Process workers, so that a dismissed job that ignores its dismissal can be
stopped by killing its worker process (the consumer replaces it). The reaper
thread requeues jobs whose worker died (stale heartbeat) and removes their work
directories; every worker machine runs one, and its SQL is safe to run concurrently.
It also requeues jobs whose task was popped by a worker that died before claiming
them (seen as `accepted` jobs while the queue and the schedule are empty).
"""

from __future__ import annotations

import logging
import threading

from huey.consumer import Consumer

from ..settings import get_settings
from ..uploads.complete import purge_expired
from ..workspace import workspace_of
from . import events, store
from .follow import follow_up
from .queue import enqueue, get_huey
from .runner import cleanup_workdirs

log = logging.getLogger("canopy.worker")


def reap_once() -> None:
    settings = get_settings()
    for job_id, status, progress, changes in store.reap(settings.job_stale, settings.job_attempts):
        log.warning("job %s had a stale heartbeat: %s", job_id, "requeued" if status == "accepted" else status)
        if status == "accepted":
            enqueue(job_id)
        else:
            events.publish(job_id, "failed", progress, "failed: the worker stopped responding on every attempt")
        follow_up(changes, settings)           # a tile failed for good fails its parent
    huey = get_huey()
    if huey.pending_count() == 0 and huey.scheduled_count() == 0:
        for job_id in store.lost_in_queue(settings.job_stale):
            log.warning("job %s was queued but its task is gone: requeued", job_id)
            enqueue(job_id)
    workspace = workspace_of(settings)
    cleanup_workdirs(workspace.jobs)
    purged = purge_expired(workspace)
    if purged:
        log.info("purged %d expired uploads", purged)


class _Reaper(threading.Thread):
    def __init__(self, stop: threading.Event):
        super().__init__(daemon=True, name="reaper")
        self.stop = stop

    def run(self) -> None:
        while not self.stop.wait(get_settings().reap_every):
            try:
                reap_once()
            except Exception:  # the reaper must outlive database and Redis outages
                log.exception("reaper pass failed")


class CanopyConsumer(Consumer):
    def start(self):
        super().start()                       # forks the workers first, then the reaper thread
        self._reaper_stop = threading.Event()
        _Reaper(self._reaper_stop).start()

    def stop(self, graceful=False):
        getattr(self, "_reaper_stop", threading.Event()).set()
        super().stop(graceful=graceful)


def run(workers: int) -> None:
    grace = get_settings().worker_grace
    consumer = CanopyConsumer(get_huey(), workers=workers, worker_type="process", periodic=False,
                              graceful_signal="TERM", shutdown_timeout=grace, health_check_interval=1,
                              initial_delay=0.01, max_delay=0.1, backoff=1.1)
    consumer.run()
