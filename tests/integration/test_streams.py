"""Job event streams (`/jobs/{id}/events`) hold no thread of the web server: hundreds stay
open while the API answers, each ends with a final event, with an `error` event when
Redis goes away, and with a reconnect hint when the server stops."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
import requests

from bench.sse import Streams, add_jobs, frames as _events, latencies, p
from tests.conftest import PASSWORD, running_server

pytestmark = pytest.mark.integration


def _finish(db_url: str, redis_url: str, job_id: str, status: str) -> None:
    """What a worker does when a job ends: the row, then the event."""
    import redis
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET status = %s, progress = 100, message = %s, updated = now() "
                     "WHERE identifier = %s", (status, status, job_id))
    redis.Redis.from_url(redis_url).publish(f"canopy:job:{job_id}", json.dumps(
        {"jobID": job_id, "status": status, "progress": 100, "message": status, "updated": None}))


def test_500_idle_streams_leave_the_api_answering(server, services, make_user):
    """p99 of /healthz and an items page with 500 streams open: under 100 ms, or (on a
    machine loaded by other work) within twice the p99 measured just before with none."""
    user = make_user("analyst")
    jobs = add_jobs(services[0], user.id, 500)
    auth = {"Authorization": f"Bearer {user.token}"}
    health0 = latencies(server, "/healthz", 200)
    items0 = latencies(server, "/collections/plots/items?limit=10", 100, auth)
    streams = Streams()
    try:
        opened = streams.open(server, jobs, user.token)
        assert [s for s, _ in opened] == ["HTTP/1.1 200 OK"] * 500
        assert all(_events(first) == [("accepted", _events(first)[0][1])] for _, first in opened)
        assert _events(opened[0][1])[0][1]["jobID"] == jobs[0]
        health = latencies(server, "/healthz", 200)
        items = latencies(server, "/collections/plots/items?limit=10", 100, auth)
        for name, before, now in (("/healthz", health0, health), ("items", items0, items)):
            print(f"{name}: p50/p99 {p(before, 50):.1f}/{p(before, 99):.1f} ms with no stream, "
                  f"{p(now, 50):.1f}/{p(now, 99):.1f} ms with 500")
            assert p(now, 99) < max(100, 2 * p(before, 99)) and max(now) < 2000
        _finish(services[0], services[1], jobs[7], "successful")      # a final event ends its stream
        event, data = streams.next_event(7, timeout=20)
        assert (event, data["jobID"], data["progress"]) == ("successful", jobs[7], 100)
        assert streams.next_event(7, timeout=5) is None              # and the stream closed
    finally:
        streams.close()


def test_a_final_state_whose_event_was_lost_ends_the_stream(services, tmp_path, make_user):
    """Only the row changes (the worker could not publish): the re-read ends the stream."""
    with running_server(services, tmp_path, CANOPY_SSE_KEEPALIVE="1") as base:
        from bench.stack import add_user
        name = f"lost-{time.monotonic_ns()}"
        uid = add_user(services[0], name, PASSWORD)
        token = requests.post(f"{base}/auth/token", json={"username": name, "password": PASSWORD},
                              timeout=30).json()["access_token"]
        job = add_jobs(services[0], uid, 1)[0]
        streams = Streams()
        try:
            assert [e for _, f in streams.open(base, [job], token) for e, _ in _events(f)] == ["accepted"]
            with psycopg.connect(services[0], autocommit=True) as conn:
                conn.execute("UPDATE jobs SET status = 'failed', message = 'boom' WHERE identifier = %s", (job,))
            event, data = streams.next_event(0, timeout=10)
            assert (event, data["status"], data["message"]) == ("failed", "failed", "boom")
            assert streams.next_event(0, timeout=5) is None
        finally:
            streams.close()


def test_a_stream_of_someone_elses_job_is_404_and_without_token_401(server, services, make_user):
    owner, other = make_user("analyst"), make_user("analyst")
    job = add_jobs(services[0], owner.id, 1)[0]
    r = requests.get(f"{server}/jobs/{job}/events", headers={"Authorization": f"Bearer {other.token}"}, timeout=10)
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/problem+json"
    r = requests.get(f"{server}/jobs/{job}/events", headers={"Authorization": "Bearer nonsense"}, timeout=10)
    assert r.status_code == 401 and r.json()["status"] == 401


def test_redis_going_away_ends_streams_with_an_error_event_and_stopping_closes_them(services, tmp_path):
    """A server on a Redis of its own: stopping that Redis sends every open stream an
    `error` event (not a cut); SIGTERM closes streams with a reconnect hint in seconds."""
    from bench.stack import add_user
    from server.devservices import LocalRedis

    rd = LocalRedis(tmp_path / "redis", persist=False)
    redis_url = rd.start()
    try:
        with running_server((services[0], redis_url), tmp_path) as base:
            name = f"streams-{time.monotonic_ns()}"
            uid = add_user(services[0], name, PASSWORD)
            token = requests.post(f"{base}/auth/token", json={"username": name, "password": PASSWORD},
                                  timeout=30).json()["access_token"]
            jobs = add_jobs(services[0], uid, 3)
            streams = Streams()
            try:
                opened = streams.open(base, jobs[:2], token)
                assert [e for _, first in opened for e, _ in _events(first)] == ["accepted", "accepted"]
                rd.stop()
                t = time.monotonic()
                got = [streams.next_event(i, timeout=30) for i in range(2)]
                assert [(e, d["status"]) for e, d in got] == [("error", 503)] * 2
                assert [streams.next_event(i, timeout=5) for i in range(2)] == [None, None]
                assert time.monotonic() - t < 20
                assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
                rd.start()
                late = Streams()
                try:
                    assert [e for _, f in late.open(base, jobs[2:], token) for e, _ in _events(f)] == ["accepted"]
                    t = time.monotonic()
                    late_stopping = late
                finally:
                    pass
            finally:
                streams.close()
        took = time.monotonic() - t                 # running_server sent SIGTERM and waited for the exit
        tail = late_stopping.read(0, timeout=5)
        late_stopping.close()
        assert b"retry: 1000" in tail and took < 10
    finally:
        rd.stop()
