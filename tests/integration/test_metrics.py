"""`/metrics` (Prometheus text format) on the real server: requests by route template,
latency histograms summed over gunicorn's workers, and a job seen moving through its
states while it runs on a real worker."""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def _scrape(server: str, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    r = requests.get(f"{server}/metrics", headers=headers, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _jobs(sample: dict, state: str) -> float:
    return sample.get(("canopy_jobs", (("process", "echo"), ("state", state))), 0.0)


def test_requests_are_counted_by_route_template_over_all_workers(server):
    before = _scrape(server)
    key = ("canopy_http_requests_total", (("method", "GET"), ("route", "/jobs/<job_id>"), ("status", "404")))
    for i in range(20):                          # spread over both gunicorn workers
        assert requests.get(f"{server}/jobs/nope-{i}", timeout=10).status_code == 404
    after = _scrape(server)
    assert after[key] - before.get(key, 0) == 20
    hist = ("canopy_http_request_duration_seconds_count", (("method", "GET"), ("route", "/jobs/<job_id>")))
    assert after[hist] - before.get(hist, 0) == 20
    assert after[("canopy_up", (("service", "database"),))] == 1 and after[("canopy_up", (("service", "redis"),))] == 1
    assert not any(labels and dict(labels).get("route", "").startswith("/jobs/nope") for _, labels in after)


def test_metrics_are_for_admins_and_private_networks(server, make_user, admin_headers):
    outside = {"X-Forwarded-For": "8.8.8.8"}
    assert requests.get(f"{server}/metrics", headers=outside, timeout=10).status_code == 403
    analyst = {"Authorization": f"Bearer {make_user('analyst').token}", **outside}
    assert requests.get(f"{server}/metrics", headers=analyst, timeout=10).status_code == 403
    assert requests.get(f"{server}/metrics", headers={**admin_headers, **outside}, timeout=10).status_code == 200


def test_a_job_moves_accepted_running_successful_in_the_scrape(server, workers, make_user):
    runner = {"Authorization": f"Bearer {make_user('analyst').token}"}
    base = _scrape(server)
    r = requests.post(f"{server}/processes/echo/execution", json={"inputs": {"message": "m", "delay": 4}},
                      headers={"Prefer": "respond-async", **runner}, timeout=30)
    assert r.status_code == 201
    job = r.json()["jobID"]
    queued = _scrape(server)                     # no worker yet: accepted, and waiting in the queue
    assert _jobs(queued, "accepted") - _jobs(base, "accepted") == 1
    assert queued[("canopy_queue_depth", ())] >= 1
    workers.start(1)
    seen, deadline = [], time.monotonic() + 90
    while time.monotonic() < deadline:
        now = _scrape(server)
        delta = {s: _jobs(now, s) - _jobs(base, s) for s in ("accepted", "running", "successful")}
        state = next((s for s, d in delta.items() if d == 1), None)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state == "running":
            assert now[("canopy_jobs_heartbeating", ())] >= 1
            assert now[("canopy_job_heartbeat_age_max_seconds", ())] < 10
        if state == "successful":
            break
        time.sleep(0.3)
    assert seen == ["accepted", "running", "successful"], seen
    assert requests.get(f"{server}/jobs/{job}", headers=runner, timeout=10).json()["status"] == "successful"
