"""The job state machine against the real PostGIS, in process: every final transition of
a fan-out tile settles its parent in the same transaction, and the heartbeat thread is
an ordinary stoppable, joinable thread."""

from __future__ import annotations

import json
import threading
import time
import uuid
from types import SimpleNamespace

import psycopg
import pytest

from processes.base import Outcome


_CREATED: list[str] = []


@pytest.fixture()
def store(db_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", db_url)       # db.pool's default, as in a worker
    from server.jobs import store
    yield store
    with psycopg.connect(db_url, autocommit=True) as conn:   # nothing left for later tests' reapers
        conn.execute("UPDATE jobs SET status = 'dismissed' WHERE identifier = ANY(%s) "
                     "AND status IN ('accepted', 'running')", (_CREATED,))


def _job(conn, status: str, *, parent: str | None = None, tile: int | None = None, heartbeat: str | None = "now()",
         attempts: int = 1) -> str:
    job_id = uuid.uuid4().hex
    conn.execute(f"INSERT INTO jobs (identifier, process_id, status, parent_id, tile_index, attempts, heartbeat_at, "
                 f"inputs, message) VALUES (%s, %s, %s, %s, %s, %s, {heartbeat or 'NULL'}, %s, %s)",
                 (job_id, "inventory-tile" if parent else "forest-inventory", status, parent, tile, attempts,
                  json.dumps({"inputs": {}}), status))
    _CREATED.append(job_id)
    return job_id


def _fan_out(db_url: str, tiles: list[str], *, waiting: bool = True) -> tuple[str, list[str]]:
    """A parent (waiting unless told otherwise) and one child per status in `tiles`."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        parent = _job(conn, "running", heartbeat=None if waiting else "now()")
        kids = [_job(conn, status, parent=parent, tile=i,
                     heartbeat="now() - interval '1 hour'" if status == "running" else None)
                for i, status in enumerate(tiles)]
    return parent, kids


def _states(db_url: str, *ids: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        rows = dict((r[0], r[1:]) for r in conn.execute(
            "SELECT identifier, status, message, updated FROM jobs WHERE identifier = ANY(%s)", (list(ids),)))
    return [rows[i] for i in ids]


def test_a_reaped_tile_fails_its_waiting_parent_in_the_same_transaction(store, db_url):
    parent, (done, lost, queued) = _fan_out(db_url, ["successful", "running", "accepted"])
    reaped = {job_id: rest for job_id, *rest in store.reap(stale_seconds=10, max_attempts=1)}
    status, _, changes = reaped[lost]
    assert status == "failed"
    assert changes.failed[0] == parent and "tile 1 failed" in changes.failed[2]
    assert [job for job, _ in changes.dismissed] == [queued]
    (p_status, p_message, p_updated), (l_status, _, l_updated), (q_status, _, _), (d_status, _, _) = \
        _states(db_url, parent, lost, queued, done)
    assert (p_status, l_status, q_status, d_status) == ("failed", "failed", "dismissed", "successful")
    assert "stopped responding" in p_message
    assert p_updated == l_updated                    # now() of one transaction


def test_a_reaped_tile_with_attempts_left_is_requeued_and_the_parent_waits(store, db_url):
    parent, (lost,) = _fan_out(db_url, ["running"])
    reaped = {job_id: rest for job_id, *rest in store.reap(stale_seconds=10, max_attempts=3)}
    assert reaped[lost][0] == "accepted" and not reaped[lost][2].failed
    assert [s[0] for s in _states(db_url, parent, lost)] == ["running", "accepted"]


def test_a_dismissed_tile_fails_its_parent_in_the_same_transaction(store, db_url):
    parent, (done, running, queued) = _fan_out(db_url, ["successful", "running", "accepted"])
    previous, changes = store.dismiss(running)
    assert previous == "running"
    assert changes.failed[0] == parent and changes.failed[2] == "tile 1 was dismissed"
    assert sorted(job for job, _ in changes.dismissed) == [queued] and changes.ended == [parent]
    (p_status, _, p_updated), (r_status, _, r_updated), (q_status, _, _), (d_status, _, _) = \
        _states(db_url, parent, running, queued, done)
    assert (p_status, r_status, q_status, d_status) == ("failed", "dismissed", "dismissed", "successful")
    assert p_updated == r_updated


def test_dismissing_a_successful_tile_of_a_waiting_parent_fails_it(store, db_url):
    parent, (done, running) = _fan_out(db_url, ["successful", "running"])
    assert store.dismiss(done)[0] == "successful"
    assert [s[0] for s in _states(db_url, parent, done, running)] == ["failed", "dismissed", "dismissed"]


def test_dismissing_a_parent_dismisses_every_tile_and_ends_the_fan_out(store, db_url):
    parent, kids = _fan_out(db_url, ["successful", "running", "accepted"])
    previous, changes = store.dismiss(parent)
    assert previous == "running" and changes.ended == [parent] and not changes.failed
    assert sorted(job for job, _ in changes.dismissed) == sorted(kids)
    assert [s[0] for s in _states(db_url, parent, *kids)] == ["dismissed"] * 4


def test_a_failed_tile_fails_its_parent(store, db_url):
    parent, (failing, queued) = _fan_out(db_url, ["running", "accepted"])
    changes = store.fail(failing, 1, "bad tile")
    assert changes.failed[0] == parent and changes.failed[2] == "tile 0 failed: bad tile"
    assert [s[0] for s in _states(db_url, parent, failing, queued)] == ["failed", "failed", "dismissed"]


def test_the_last_successful_tile_releases_its_parent(store, db_url):
    from server.jobs import commit
    parent, (done, last) = _fan_out(db_url, ["successful", "running"])
    job = {"id": last, "project_id": None, "parent_id": parent, "attempts": 1}
    results, changes = commit.commit(job, Outcome(outputs={"part": "p1"}), SimpleNamespace(storage=None))
    assert results == {"part": "p1"} and changes.released == parent and not changes.failed
    (p_status, p_message, p_updated), (l_status, _, l_updated) = _states(db_url, parent, last)
    assert (p_status, p_message, l_status) == ("accepted", "merging tiles", "successful")
    assert p_updated == l_updated


def test_tiles_that_ended_before_their_parent_waits_settle_it_when_it_does(store, db_url):
    parent, _ = _fan_out(db_url, ["successful", "successful"], waiting=False)
    assert store.wait_for_children(parent, 2).released == parent
    assert _states(db_url, parent)[0][0] == "accepted"
    parent, _ = _fan_out(db_url, ["successful", "failed"], waiting=False)
    changes = store.wait_for_children(parent, 2)
    assert changes.failed[0] == parent and _states(db_url, parent)[0][0] == "failed"


def test_concurrent_tiles_settle_their_parent_exactly_once(store, db_url):
    from server.jobs import commit
    parent, kids = _fan_out(db_url, ["running"] * 6)
    released, errors = [], []

    def finish(kid):
        try:
            kid_job = {"id": kid, "project_id": None, "parent_id": parent, "attempts": 1}
            _, changes = commit.commit(kid_job, Outcome(outputs={}), SimpleNamespace(storage=None))
            released.append(changes.released)
        except Exception as err:          # a deadlock would surface here
            errors.append(err)

    threads = [threading.Thread(target=finish, args=(k,)) for k in kids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and sorted(r for r in released if r) == [parent]
    assert _states(db_url, parent)[0][0] == "accepted"


def test_the_heartbeat_thread_is_stoppable_and_joinable(store, db_url):
    from server.jobs.runner import Heartbeat
    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = _job(conn, "running", heartbeat="now() - interval '1 hour'")
    stuck = []
    beat = Heartbeat(job_id, 1, interval=0.05, grace=0.3, on_stuck=lambda: stuck.append(time.monotonic()))
    assert not beat.is_alive()
    beat.start()
    assert beat.is_alive()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with psycopg.connect(db_url) as conn:
            age = conn.execute("SELECT extract(epoch FROM now() - heartbeat_at) FROM jobs WHERE identifier = %s",
                               (job_id,)).fetchone()[0]
        if age < 5:
            break
        time.sleep(0.05)
    assert age < 5                                    # the heartbeat was refreshed
    dismissed_at = time.monotonic()
    assert store.dismiss(job_id)[0] == "running"
    assert beat.dismissed.wait(2)
    beat.join(5)                                      # ends by itself after on_stuck
    assert not beat.is_alive()
    assert len(stuck) == 1 and stuck[0] - dismissed_at >= 0.3

    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = _job(conn, "running")
    beat = Heartbeat(job_id, 1, interval=0.05)
    beat.start()
    time.sleep(0.2)
    beat.stop()
    beat.join(2)
    assert not beat.is_alive() and not beat.dismissed.is_set()


def test_an_attempt_the_reaper_replaced_can_neither_keep_nor_finish_its_job(store, db_url):
    """A live run taken for dead (its heartbeat late) and requeued: once another attempt has
    claimed the job, the first one's heartbeat says it is lost, and its progress, retry,
    failure and commit change nothing; the second attempt finishes the job."""
    from server.jobs import commit
    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = _job(conn, "running", heartbeat="now() - interval '1 hour'")
    assert [r[:2] for r in store.reap(stale_seconds=10, max_attempts=3) if r[0] == job_id] == [(job_id, "accepted")]
    assert store.heartbeat(job_id, 1) == "lost"                  # requeued, not yet claimed
    second = store.claim(job_id)
    assert second["attempts"] == 2
    assert store.heartbeat(job_id, 1) == "lost" and store.heartbeat(job_id, 2) == "running"
    assert store.progress(job_id, 1, 50, "stale") is None
    assert store.requeue(job_id, 1, "stale retry") is False
    assert store.fail(job_id, 1, "stale failure") is None
    with pytest.raises(commit.Superseded):
        commit.commit({"id": job_id, "project_id": None, "parent_id": None, "attempts": 1},
                      Outcome(outputs={"by": 1}), SimpleNamespace(storage=None))
    assert store.progress(job_id, 2, 50, "going")["status"] == "running"
    results, _ = commit.commit({"id": job_id, "project_id": None, "parent_id": None, "attempts": 2},
                               Outcome(outputs={"by": 2}), SimpleNamespace(storage=None))
    assert results == {"by": 2}
    assert _states(db_url, job_id)[0][0] == "successful" and store.heartbeat(job_id, 2) == "successful"


def test_a_forked_process_opens_its_own_pool_and_leaves_its_parents_alone(store, db_url):
    """db.pool after os.fork(): the child gets a pool of its own (not the parent's sockets),
    and the parent's connections still work after the child used and left its pool."""
    import os
    from db.pool import get_pool
    parent_pool = get_pool()
    with parent_pool.connection() as conn:
        parent_backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    pid = os.fork()
    if pid == 0:                                        # the child: report by exit code only
        code = 1
        try:
            pool = get_pool()
            with pool.connection() as conn:
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            code = 0 if pool is not parent_pool and backend != parent_backend else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] >> 8 == 0
    for _ in range(3):
        with parent_pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
