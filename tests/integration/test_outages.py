"""Outages are 503 with Retry-After, never 500: a server on a PostgreSQL and a Redis of
its own, each stopped for real under it and started again."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import PASSWORD, private_services, running_server, token_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    """(LocalPostgres, LocalRedis, base URL, token, job id) of a server of their own."""
    from bench.sse import add_jobs

    with private_services("outages", "outage") as (pg, rd, db, redis_url, uid):
        with running_server((db, redis_url), tmp_path_factory.mktemp("outages")) as base:
            yield pg, rd, base, token_of(base, "outage"), add_jobs(db, uid, 1)[0]


def _ask(base: str, method: str, path: str, token: str | None = None, **kw) -> tuple[int, dict, float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    t = time.monotonic()
    r = requests.request(method, base + path, headers=headers, timeout=30, **kw)
    return r.status_code, r.headers, time.monotonic() - t


def _until(check, timeout: float = 10) -> float:
    t = time.monotonic()
    while not check():
        assert time.monotonic() - t < timeout, "did not recover in time"
        time.sleep(0.2)
    return time.monotonic() - t


def test_postgres_down_is_503_with_retry_after_on_every_route(private):
    pg, _, base, token, job = private
    assert _ask(base, "GET", "/collections/plots/items", token)[0] == 200
    pg.stop()
    try:
        routes = [("GET", "/collections/plots/items", None), ("GET", "/collections/plots/items", token),
                  ("GET", "/collections/plots/items/1", None), ("GET", f"/jobs/{job}", token),
                  ("GET", "/jobs", token), ("GET", f"/jobs/{job}/events", token),
                  ("POST", "/auth/token", None), ("GET", "/rasters/1/tilejson.json", token),
                  ("POST", "/processes/echo/execution", token)]
        seen = {}
        for method, path, who in routes:
            kw = {"json": {"username": "outage", "password": PASSWORD}} if path == "/auth/token" else (
                {"json": {"inputs": {"message": "x"}}} if method == "POST" else {})
            status, headers, took = _ask(base, method, path, who, **kw)
            seen[(method, path, bool(who))] = (status, headers.get("Retry-After"), headers.get("Content-Type"))
            assert took < 5, (path, took)                 # the pool waits 2 s, not 10
        assert {k: v[:2] for k, v in seen.items()} == {k: (503, "5") for k in seen}
        assert all(v[2].startswith(("application/problem+json", "application/json")) for v in seen.values())
        assert _ask(base, "GET", "/healthz")[0] == 200 and _ask(base, "GET", "/readyz")[0] == 503
    finally:
        pg.start()
    took = _until(lambda: _ask(base, "GET", "/collections/plots/items", token)[0] == 200, timeout=5)
    assert took < 5 and _ask(base, "GET", f"/jobs/{job}", token)[0] == 200


def test_redis_down_leaves_reads_working_and_answers_writes_503(private):
    _, rd, base, token, job = private
    rd.stop()
    try:
        assert _ask(base, "GET", "/collections/plots/items", token)[0] == 200     # revocation fails open for reads
        assert _ask(base, "GET", f"/jobs/{job}", token)[0] == 200
        assert _ask(base, "GET", "/jobs", token)[0] == 200
        for method, path, kw in (("POST", "/processes/echo/execution", {"json": {"inputs": {"message": "x"}}}),
                                 ("DELETE", f"/jobs/{job}", {}), ("GET", f"/jobs/{job}/events", {})):
            status, headers, took = _ask(base, method, path, token, **kw)
            assert (method, path, status, headers.get("Retry-After")) == (method, path, 503, "5")
            assert took < 5
        status, headers, _ = _ask(base, "GET", "/readyz")
        assert status == 503
    finally:
        rd.start()
    _until(lambda: _ask(base, "GET", "/readyz")[0] == 200, timeout=5)
    status, _, _ = _ask(base, "DELETE", f"/jobs/{job}", token)
    assert status == 200
