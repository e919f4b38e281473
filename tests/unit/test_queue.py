"""The job queue is built from Settings on first use, never from the environment at import."""

from __future__ import annotations

import pytest

from server.jobs import queue
from server.settings import get_settings


@pytest.fixture()
def fresh_queue(monkeypatch):
    def reset():
        get_settings.cache_clear()
        queue._queue.cache_clear()
    reset()
    yield monkeypatch
    reset()


def test_the_queue_uses_the_redis_settings_names(fresh_queue):
    fresh_queue.setenv("REDIS_URL", "redis://127.0.0.1:6390/3")
    pool = queue.get_huey().storage.conn.connection_pool
    assert (pool.connection_kwargs["port"], pool.connection_kwargs["db"]) == (6390, 3)
    assert queue.task_for("a-job").name == "canopy.run_job"


def test_without_redis_the_queue_says_so(fresh_queue):
    fresh_queue.delenv("REDIS_URL", raising=False)
    with pytest.raises(RuntimeError, match="REDIS_URL is not set"):
        queue.get_huey()
