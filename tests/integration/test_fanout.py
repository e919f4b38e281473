"""A scan above the fan-out threshold runs as one child job per tile on any worker and
merges back into the same result as a single-machine run."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
import requests

from processes.lidar.pipeline import ALL_PRODUCTS, Params, run
from processes.lidar.synthetic import make_forest, write_las
from tests.integration.test_jobs import _wait
from tests.integration.test_lidar_processes import _run

TILE = 100.0
FANOUT_ENV = {"CANOPY_FANOUT_POINTS": "1000", "CANOPY_JOB_STALE": "3", "CANOPY_REAP_EVERY": "1"}


@pytest.fixture(scope="module")
def big(server, db_url, tmp_path_factory):
    """A 200 m x 200 m forest in four files (one per quadrant), as an uploaded scan; sparse
    (2 pulses/m²), so that its CHM cell is chosen coarser than the finest (0.8 m)."""
    points, _ = make_forest("open", size=200, seed=9, density=2.0)
    storage = Path(server.log).parent / "storage"
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name) VALUES ('fan-out') RETURNING id").fetchone()[0]
        scan_id = conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, 'big', 'uploaded') "
                               "RETURNING id", (project,)).fetchone()[0]
        x0, y0 = points.x.min(), points.y.min()
        files = []
        for i, (dx, dy) in enumerate(((0, 0), (100, 0), (0, 100), (100, 100))):
            keep = (points.x >= x0 + dx) & (points.x < x0 + dx + 100) & (points.y >= y0 + dy) & \
                   (points.y < y0 + dy + 100)
            key = f"scans/{scan_id}/q{i}.laz"
            (storage / key).parent.mkdir(parents=True, exist_ok=True)
            write_las(storage / key, points.subset(keep), crs="EPSG:32610")
            files.append(storage / key)
            conn.execute("INSERT INTO scan_files (scan_id, storage_uri, filename) VALUES (%s, %s, %s)",
                         (scan_id, key, key))
    single = tmp_path_factory.mktemp("single")
    params = Params(tile_size=TILE)
    summary = run([str(f) for f in files], single, params=params, products=ALL_PRODUCTS)
    return {"project": project, "scan": scan_id, "files": files, "single": single, "summary": summary}


@pytest.fixture(scope="module")
def owner(make_user, big):
    return {"Authorization": f"Bearer {make_user('analyst', {big['project']: 'owner'}).token}"}


def _start_inventory(server, big, owner) -> str:
    """Queue a fanned-out forest inventory of the big scan; its job id."""
    r = requests.post(f"{server}/processes/forest-inventory/execution",
                      json={"inputs": {"scan": big["scan"], "tile_size": TILE}},
                      headers={"Prefer": "respond-async", **owner})
    assert r.status_code == 201, r.text
    return r.json()["jobID"]


def _trees(db_url: str, scan: int, run: str) -> np.ndarray:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT x, y, height_m FROM trees WHERE scan_id = %s AND run_id = %s ORDER BY x, y",
                            (scan, run)).fetchall()
    return np.array(rows, dtype=float)


def _assert_same_as_single_machine(server, db_url, big, results, job_id: str) -> None:
    """The fan-out's products are one run, the parent's (each re-run is a run of its own)."""
    storage = Path(server.log).parent / "storage"
    with psycopg.connect(db_url) as conn:
        chm_key = conn.execute("SELECT storage_uri FROM rasters WHERE scan_id = %s AND kind = 'chm' AND run_id = %s",
                               (big["scan"], job_id)).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM rasters WHERE run_id IN (SELECT identifier FROM jobs "
                            "WHERE parent_id = %s)", (job_id,)).fetchone()[0] == 0
    with rasterio.open(storage / chm_key) as fanned, rasterio.open(big["summary"]["products"]["chm"]) as single:
        # one CHM cell for every tile, chosen from the density measured at ingestion
        assert fanned.res == single.res == (0.8, 0.8)
        assert fanned.transform == single.transform and fanned.shape == single.shape
        a, b = fanned.read(1), single.read(1)
        both = np.isfinite(a) & np.isfinite(b)
        assert (np.isnan(a) == np.isnan(b)).all()
        assert np.abs(a[both] - b[both]).max() <= 1e-6
    trees = _trees(db_url, big["scan"], job_id)
    features = json.loads(Path(big["summary"]["products"]["trees"]).read_text())["features"]
    single = np.array(sorted((f["geometry"]["coordinates"][0], f["geometry"]["coordinates"][1],
                              f["properties"]["height"]) for f in features))
    assert trees.shape == single.shape                      # none duplicated or lost at tile borders
    assert np.allclose(trees, single, atol=1e-6)
    assert results["summary"]["tree_count"] == len(single)


def test_a_big_scan_fans_out_across_workers_and_merges_seamlessly(server, workers, db_url, big, owner):
    workers.start(1, **FANOUT_ENV)
    workers.start(1, **FANOUT_ENV)
    assert _run(server, owner, "ingest-scan", {"scan": big["scan"]})["status"] == "successful"
    job_id = _start_inventory(server, big, owner)
    seen = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job = requests.get(f"{server}/jobs/{job_id}", headers=owner).json()
        seen.append(job["progress"])
        if job["status"] in ("successful", "failed", "dismissed"):
            break
        time.sleep(0.3)
    assert job["status"] == "successful", job
    assert len(set(seen)) > 3 and seen == sorted(seen)        # the parent's progress follows its tiles'
    with psycopg.connect(db_url) as conn:
        tiles = conn.execute("SELECT status, attempts FROM jobs WHERE parent_id = %s", (job_id,)).fetchall()
    results = requests.get(f"{server}/jobs/{job_id}/results", headers=owner).json()
    assert len(tiles) >= 4 and tiles == [("successful", 1)] * results["summary"]["tiles"]
    _assert_same_as_single_machine(server, db_url, big, results, job_id)
    storage = Path(server.log).parent / "storage"
    assert not (storage / "tmp" / "fanout" / job_id).exists()


def test_killing_a_worker_retries_only_its_tile(server, workers, db_url, big, owner):
    first = workers.start(1, **FANOUT_ENV)          # alone: the running tile is on it
    job_id = _start_inventory(server, big, owner)
    deadline = time.monotonic() + 120
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            running = conn.execute("SELECT count(*) FROM jobs WHERE parent_id = %s AND status = 'running'",
                                   (job_id,)).fetchone()[0]
            if running:
                break
            time.sleep(0.1)
    workers.kill(first, signal.SIGKILL)
    workers.start(1, **FANOUT_ENV)
    workers.start(1, **FANOUT_ENV)
    job = _wait(server, owner, job_id, timeout=600)
    assert job["status"] == "successful", job
    with psycopg.connect(db_url) as conn:
        attempts = sorted(r[0] for r in conn.execute("SELECT attempts FROM jobs WHERE parent_id = %s",
                                                     (job_id,)).fetchall())
    assert attempts[-1] == 2 and attempts.count(1) == len(attempts) - 1   # only the lost tile ran again
    results = requests.get(f"{server}/jobs/{job_id}/results", headers=owner).json()
    _assert_same_as_single_machine(server, db_url, big, results, job_id)


def test_dismissing_the_parent_stops_its_tiles(server, workers, db_url, big, owner):
    workers.start(1, **FANOUT_ENV)
    job_id = _start_inventory(server, big, owner)
    with psycopg.connect(db_url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not conn.execute(
                "SELECT count(*) FROM jobs WHERE parent_id = %s", (job_id,)).fetchone()[0]:
            time.sleep(0.1)
        assert requests.delete(f"{server}/jobs/{job_id}", headers=owner).json()["status"] == "dismissed"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            states = {s for (s,) in conn.execute("SELECT status FROM jobs WHERE parent_id = %s", (job_id,))}
            if states <= {"dismissed", "successful"}:
                break
            time.sleep(0.2)
    assert states <= {"dismissed", "successful"} and "dismissed" in states


def _first_running_tile(db_url: str, job_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT identifier FROM jobs WHERE parent_id = %s AND status = 'running' LIMIT 1",
                               (job_id,)).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError(f"no tile of {job_id} ran within {timeout} s")


def _row(db_url: str, job_id: str) -> tuple:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT status, message, updated FROM jobs WHERE identifier = %s", (job_id,)).fetchone()


def test_dismissing_a_tile_fails_its_parent_at_once(server, workers, db_url, big, owner):
    workers.start(1, **FANOUT_ENV)
    job_id = _start_inventory(server, big, owner)
    tile = _first_running_tile(db_url, job_id)
    r = requests.delete(f"{server}/jobs/{tile}", headers=owner)
    assert r.status_code == 200 and r.json()["status"] == "dismissed"
    parent = requests.get(f"{server}/jobs/{job_id}", headers=owner).json()
    assert parent["status"] == "failed" and "was dismissed" in parent["message"], parent
    assert _row(db_url, job_id)[2] == _row(db_url, tile)[2]          # settled in the tile's transaction
    with psycopg.connect(db_url) as conn:
        left = conn.execute("SELECT count(*) FROM jobs WHERE parent_id = %s AND status IN ('accepted', 'running')",
                            (job_id,)).fetchone()[0]
    assert left == 0                                                  # the other tiles were dismissed with it


def test_a_tile_lost_on_its_last_attempt_fails_its_parent_within_the_stale_interval(server, workers, db_url, big,
                                                                                     owner):
    env = {**FANOUT_ENV, "CANOPY_JOB_ATTEMPTS": "1"}
    first = workers.start(1, **env)
    job_id = _start_inventory(server, big, owner)
    tile = _first_running_tile(db_url, job_id)
    workers.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    workers.start(1, **env)                       # its reaper finds the tile's stale heartbeat
    stale = float(FANOUT_ENV["CANOPY_JOB_STALE"]) + float(FANOUT_ENV["CANOPY_REAP_EVERY"])
    deadline = killed + stale + 20                # + the new worker's start-up
    while time.monotonic() < deadline and _row(db_url, tile)[0] == "running":
        time.sleep(0.1)
    tile_status, tile_message, tile_updated = _row(db_url, tile)
    parent_status, parent_message, parent_updated = _row(db_url, job_id)
    assert tile_status == "failed" and "stopped responding" in tile_message
    assert parent_status == "failed" and f"failed: {tile_message}" in parent_message
    assert parent_updated == tile_updated         # in the same transaction as the tile
    assert _wait(server, owner, job_id, timeout=5)["status"] == "failed"
