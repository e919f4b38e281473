"""The Huey instance (Redis) and the tasks it runs.

Huey has no acknowledgements: a task whose worker dies is gone. The `jobs` table
(heartbeats, attempts) and the reaper make execution at-least-once; tasks only
carry a job id and find everything else in the table.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from huey import RedisHuey

from ..settings import get_settings


@lru_cache(maxsize=1)
def _queue():
    """The Huey instance and its one task, built on first use from Settings, so that
    importing this module reads no environment and the web server, the worker and the
    tests all queue on the Redis that Settings names."""
    url = get_settings().redis_url
    if not url:
        raise RuntimeError("REDIS_URL is not set: jobs need Redis (`make run` starts one)")
    # blocking: workers wait on BRPOP, so an idle worker picks a job up at once (no polling delay)
    huey = RedisHuey("canopy", url=url, results=True, store_none=False, utc=True, blocking=True,
                     read_timeout=1)
    return huey, huey.task(name="canopy.run_job")(_run_job)


def get_huey() -> RedisHuey:
    return _queue()[0]


def _run_job(job_id: str) -> None:
    from .runner import run_job
    run_job(job_id, on_stuck=_kill_this_worker)


def _kill_this_worker() -> None:
    """A dismissed job that ignores its dismissal is stopped with the process running it
    (a Huey process worker: the consumer starts a fresh one). Only ever called in a
    worker: the web server runs no jobs."""
    os.kill(os.getpid(), signal.SIGKILL)


def task_for(job_id: str, delay: float = 0):
    """The Huey task that will run a job (its id can be stored with the job first)."""
    task = _queue()[1].s(job_id)
    if delay:
        task.eta = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=delay)
    return task


def push(task) -> None:
    get_huey().enqueue(task)


def enqueue(job_id: str, delay: float = 0) -> str:
    """Queue an existing job's (re-)execution, recording the task id on it."""
    from . import store
    task = task_for(job_id, delay)
    store.set_task(job_id, task.id)
    push(task)
    return task.id


def revoke(task_id: str | None) -> None:
    if task_id:
        get_huey().revoke_by_id(task_id)
