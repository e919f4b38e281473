"""The Huey instance (Redis) and the tasks it runs.

Huey has no acknowledgements: a task whose worker dies is gone. The `jobs` table
(heartbeats, attempts) and the reaper make execution at-least-once; tasks only
carry a job id and find everything else in the table.
"""

from __future__ import annotations

import os

from huey import RedisHuey

huey = RedisHuey("canopy", url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", results=True,
                 store_none=False, utc=True)


@huey.task(name="canopy.run_job")
def run_job_task(job_id: str) -> None:
    from .runner import run_job
    run_job(job_id)


def enqueue(job_id: str, delay: float = 0) -> str:
    """Queue a job's execution; returns the Huey task id."""
    from . import store
    result = run_job_task.schedule((job_id,), delay=delay) if delay else run_job_task(job_id)
    task_id = result.id
    store.set_task(job_id, task_id)
    return task_id


def revoke(task_id: str | None) -> None:
    if task_id:
        huey.revoke_by_id(task_id)
