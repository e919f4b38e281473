"""The demo `make run` loads (server/demo.py): its project and plots once, plots inside the
simulated scan's square, an earlier version's record-only scan (a row without a file)
replaced, and the demo's next job chosen from what the database already holds."""

from __future__ import annotations

import json

import psycopg
import pytest

from server import demo


@pytest.fixture()
def clean(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM projects WHERE name = %s", (demo.PROJECT,))
    yield db_url
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM projects WHERE name = %s", (demo.PROJECT,))


def test_demo_loads_once_with_plots_inside_the_scan(clean):
    first = demo.load_demo(clean)
    assert "project" in first and "MKRF plot 6" in first
    assert demo.load_demo(clean) == "demo: project and plots already loaded"
    ox, oy = demo.origin()
    with psycopg.connect(clean) as conn:
        project, visibility = conn.execute("SELECT id, visibility FROM projects WHERE name = %s",
                                           (demo.PROJECT,)).fetchone()
        inside = conn.execute(
            "SELECT count(*), sum(ST_Area(geom::geography)) FROM plots WHERE project_id = %s AND "
            "ST_Within(ST_Transform(geom, 3005), ST_Buffer(ST_MakeEnvelope(%s, %s, %s, %s, 3005), -20))",
            (project, ox, oy, ox + demo.SIZE_M, oy + demo.SIZE_M)).fetchone()
    assert visibility == "public"
    assert inside[0] == 6 and abs(inside[1] - 6 * 22.56 ** 2) < 6 * 2      # six 509 m² squares, 20 m from the edge


def test_record_only_scan_and_plots_of_an_earlier_version_are_replaced(clean):
    with psycopg.connect(clean, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name, visibility) VALUES (%s, 'public') RETURNING id",
                               (demo.PROJECT,)).fetchone()[0]
        far = {"type": "MultiPolygon", "coordinates": [[[[-122.58, 49.28], [-122.579, 49.28], [-122.579, 49.281],
                                                          [-122.58, 49.281], [-122.58, 49.28]]]]}
        conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, 'MKRF plot 1', "
                     "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326))", (project, json.dumps(far)))
        old = conn.execute("INSERT INTO scans (project_id, name, status, point_count) VALUES "
                           "(%s, %s, 'ready', 12150000) RETURNING id", (project, demo.SCAN)).fetchone()[0]
    message = demo.load_demo(clean)
    assert f"record-only scan {old} removed" in message and "MKRF plot 1 moved into the scan" in message
    with psycopg.connect(clean) as conn:
        assert conn.execute("SELECT count(*) FROM scans WHERE id = %s", (old,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM plots WHERE project_id = %s", (project,)).fetchone()[0] == 6
    assert demo.load_demo(clean) == "demo: project and plots already loaded"


def test_next_job_follows_what_is_there(clean, db_url, monkeypatch):
    """A ready scan whose inventory succeeded is complete; one with a running ingestion
    waits for that job rather than queueing another."""
    demo.load_demo(clean)
    with psycopg.connect(clean, autocommit=True) as conn:
        project = conn.execute("SELECT id FROM projects WHERE name = %s", (demo.PROJECT,)).fetchone()[0]
        scan = conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, %s, 'ingesting') "
                            "RETURNING id", (project, demo.SCAN)).fetchone()[0]
        conn.execute("INSERT INTO jobs (identifier, process_id, status, progress, project_id, inputs) VALUES "
                     "('demo-ingest', 'ingest-scan', 'running', 40, %s, %s)",
                     (project, json.dumps({"inputs": {"scan": scan}})))
        settings = type("S", (), {"database_url": clean})()
        assert demo.next_job(settings, scan) == ("demo-ingest", "ingest-scan")
        conn.execute("UPDATE scans SET status = 'ready' WHERE id = %s", (scan,))
        conn.execute("INSERT INTO jobs (identifier, process_id, status, progress, project_id, inputs) VALUES "
                     "('demo-inventory', 'forest-inventory', 'successful', 100, %s, %s)",
                     (project, json.dumps({"inputs": {"scan": scan}})))
        assert demo.next_job(settings, scan) is None
        conn.execute("DELETE FROM jobs WHERE identifier IN ('demo-ingest', 'demo-inventory')")
