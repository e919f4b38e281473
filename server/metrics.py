"""`/metrics` in the Prometheus text format (prometheus_client).

- Request counts by method, route template (`/collections/<collection_id>/items`, never
  the raw path: bounded label values) and status, and latency histograms: counted in
  each web process, summed over gunicorn's workers by prometheus_client's multiprocess
  mode (PROMETHEUS_MULTIPROC_DIR, from Settings.metrics_dir, prepared by the CLI
  before gunicorn starts).
- Jobs by process and state, the age of running jobs' heartbeats and the bytes of
  uploads: read from PostgreSQL when scraped, so every web worker reports the same
  truth; the queue depth is read from Redis (Huey's pending tasks) the same way. A
  service that does not answer leaves its metrics out and sets `canopy_up` to 0.

Access: `/metrics` answers administrators (any admin token) and clients on a private
network (loopback, RFC 1918, link-local, …: where a Prometheus server scrapes from; set
CANOPY_PROXY_HOPS behind a proxy so the real client address is seen). Anyone else gets
a 403: request rates and job counts are not for the public internet.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from pathlib import Path

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .errors import Forbidden

REQUESTS = Counter("canopy_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram("canopy_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def prepare_dir(path: Path) -> None:
    """An empty PROMETHEUS_MULTIPROC_DIR for a new gunicorn (before it starts: prometheus_client
    reads the variable when it is imported in each worker)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


class _FromServices:
    """Collected at scrape time from PostgreSQL and Redis."""

    def collect(self):
        up = GaugeMetricFamily("canopy_up", "Whether a service answered the scrape", labels=["service"])
        try:
            yield from self._database()
            up.add_metric(["database"], 1)
        except Exception:
            up.add_metric(["database"], 0)
        try:
            from .jobs.queue import get_huey
            queued = GaugeMetricFamily("canopy_queue_depth", "Tasks waiting in the job queue (Redis)")
            queued.add_metric([], get_huey().pending_count())
            yield queued
            up.add_metric(["redis"], 1)
        except Exception:
            up.add_metric(["redis"], 0)
        yield up

    def _database(self):
        from db.pool import get_pool
        with get_pool().connection() as conn:
            jobs = conn.execute("SELECT process_id, status, count(*) FROM jobs GROUP BY 1, 2").fetchall()
            beat = conn.execute("SELECT count(*), coalesce(max(extract(epoch FROM now() - heartbeat_at)), 0) "
                                "FROM jobs WHERE status = 'running' AND heartbeat_at IS NOT NULL").fetchone()
            uploads = conn.execute('SELECT completed_at IS NOT NULL, count(*), coalesce(sum("offset"), 0) '
                                   "FROM uploads GROUP BY 1").fetchall()
        by_state = GaugeMetricFamily("canopy_jobs", "Jobs by process and state", labels=["process", "state"])
        for process, state, n in jobs:
            by_state.add_metric([process, state], n)
        beating = GaugeMetricFamily("canopy_jobs_heartbeating", "Running jobs whose worker sends heartbeats")
        beating.add_metric([], beat[0])
        age = GaugeMetricFamily("canopy_job_heartbeat_age_max_seconds",
                                "Seconds since the oldest heartbeat of a running job (the reaper requeues "
                                "past CANOPY_JOB_STALE)")
        age.add_metric([], float(beat[1]))
        sizes = GaugeMetricFamily("canopy_upload_bytes", "Bytes received by uploads, in progress or completed",
                                  labels=["state"])
        count = GaugeMetricFamily("canopy_uploads", "Uploads, in progress or completed", labels=["state"])
        for done, n, received in uploads:
            sizes.add_metric(["completed" if done else "in_progress"], float(received))
            count.add_metric(["completed" if done else "in_progress"], n)
        yield from (by_state, beating, age, sizes, count)


def _allowed() -> bool:
    principal = g.get("principal")
    if principal is not None and getattr(principal, "role", None) == "admin":
        return True
    try:
        return not ipaddress.ip_address(request.remote_addr or "").is_global
    except ValueError:
        return False


def render() -> Response:
    if not _allowed():
        raise Forbidden("/metrics is for administrators and scrapers on a private network")
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.MultiProcessCollector(registry)
    else:                                   # one process (tests building the app in-process)
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(_FromServices())
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


def register(app: Flask) -> None:
    """Count and time every request by its route template."""

    @app.before_request
    def _start():
        g.metrics_start = time.perf_counter()

    @app.after_request
    def _count(response):
        start = g.pop("metrics_start", None)
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        if start is not None:
            LATENCY.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    app.add_url_rule("/metrics", "metrics", render, methods=["GET"])
