"""`python -m server worker`: the Huey consumer, its worker processes and the reaper.

SIGTERM is a graceful stop (containers and systemd send it): running tasks get
`CANOPY_WORKER_GRACE` seconds to finish, then they are interrupted and requeued.
Process workers, so that a dismissed job that ignores its dismissal can be
stopped by killing its worker process (the consumer replaces it).

The consumer only supervises: it forks its workers, Huey's scheduler and the reaper,
replaces any that dies, and itself opens no database connection and runs no thread,
so nothing of it is shared by a fork (each child opens its own connections, see
db/pool.py). Its children die with it (the kernel's parent-death signal), so a killed
consumer leaves no worker taking jobs unsupervised; their jobs' heartbeats go stale.

Every second the consumer checks its children and then touches a heartbeat file
(`$CANOPY_RUN_DIR/worker-heartbeat`): `python -m server healthcheck worker` (the
container's healthcheck, the Kubernetes liveness probe) reads its age.

The reaper requeues jobs whose worker died (stale heartbeat) and removes their work
directories; every worker machine runs one, and its SQL is safe to run concurrently.
It also requeues jobs whose task was popped by a worker that died before claiming
them (seen as `accepted` jobs while the queue and the schedule are empty).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time

from huey.consumer import BaseProcess, Consumer, ProcessEnvironment

from ..healthcheck import beat, heartbeat_path
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


class Reaper(BaseProcess):
    """The reaper's loop, run in a child process of the consumer like a worker."""

    process_name = "Reaper"

    def loop(self, now=None) -> None:
        started = time.monotonic()
        try:
            reap_once()
        except Exception:  # the reaper must outlive database and Redis outages
            log.exception("reaper pass failed")
        self.sleep_for_interval(started, get_settings().reap_every)


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux), and exit now
    if the parent died before that was set."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class _ProcessEnvironment(ProcessEnvironment):
    """Huey's forked processes, which die with the process that forked them."""

    def __init__(self, *args):
        super().__init__(*args)
        self.parent = os.getpid()

    def init_child(self, process) -> None:
        die_with_parent(self.parent)
        super().init_child(process)


class CanopyConsumer(Consumer):
    """Huey's consumer with process workers that die with it, and the reaper as one more
    supervised child."""

    def __init__(self, huey, **options):
        super().__init__(huey, worker_type="process", **options)
        self.reaper = self._create_process(Reaper(self.huey, self.stop_flag), "Reaper")
        self.heartbeat = heartbeat_path(get_settings().run_dir)

    def get_environment(self, worker_type):
        return _ProcessEnvironment(self._graceful_sig, self._interrupt_sig)

    def start(self) -> None:
        super().start()                       # forks the workers and the scheduler
        self.reaper.start()
        self._beat()

    def _beat(self) -> None:
        try:
            beat(self.heartbeat)
        except OSError as err:                # a full or read-only disk must not stop the jobs
            log.warning("cannot touch the worker heartbeat %s: %s", self.heartbeat, err)

    def check_worker_health(self) -> bool:
        healthy = super().check_worker_health()
        if not self.environment.is_alive(self.reaper):
            log.warning("the reaper died, restarting it")
            self.reaper = self._create_process(Reaper(self.huey, self.stop_flag), "Reaper")
            self.reaper.start()
        self._beat()                          # children checked (and replaced): the consumer is alive
        return healthy


def run(workers: int) -> None:
    grace = get_settings().worker_grace
    consumer = CanopyConsumer(get_huey(), workers=workers, periodic=False,
                              graceful_signal="TERM", shutdown_timeout=grace, health_check_interval=1,
                              initial_delay=0.01, max_delay=0.1, backoff=1.1)
    consumer.run()
