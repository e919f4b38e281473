"""Live job updates on Redis pub/sub (one channel per job), as Server-Sent Events."""

from __future__ import annotations

import json
import time
from datetime import datetime
from functools import lru_cache
from typing import Callable

import redis

from ..settings import get_settings


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5, socket_connect_timeout=5)


def channel(job_id: str) -> str:
    return f"canopy:job:{job_id}"


def publish(job_id: str, status: str, progress: int, message: str) -> None:
    """Best effort: a lost event is repaired by the next one or by polling."""
    payload = {"jobID": job_id, "status": status, "progress": progress, "message": message,
               "updated": datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    try:
        _redis().publish(channel(job_id), json.dumps(payload))
    except redis.RedisError:
        pass


def wait_final(job_id: str, load: Callable[[], dict], final: tuple[str, ...], timeout: float) -> dict:
    """Wait up to `timeout` seconds for a job to reach a final state; returns its last
    row (`load()`). Woken by the job's events, and re-reads the row every second in
    case one was lost."""
    deadline = time.monotonic() + timeout
    pubsub = _redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel(job_id))
    try:
        while True:
            job = load()
            if job["status"] in final or time.monotonic() >= deadline:
                return job
            until = min(deadline, time.monotonic() + 1.0)
            while (left := until - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message is not None and json.loads(message["data"])["status"] in final:
                    break
    finally:
        pubsub.close()


def frame(data: dict) -> str:
    """One SSE frame: the event is named by the job's status, its data is the status JSON."""
    return f"event: {data['status']}\ndata: {json.dumps(data, default=str)}\n\n"

