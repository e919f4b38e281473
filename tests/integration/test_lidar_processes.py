"""The LiDAR processes as jobs: a synthetic scan with known trees, ingested and inventoried."""

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
from pyproj import Transformer

from processes.lidar.synthetic import make_forest, write_las
from tests.integration.test_jobs import _wait


@pytest.fixture(scope="module")
def forest_project(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name, visibility) VALUES ('lidar jobs', 'private') "
                            "RETURNING id").fetchone()[0]


@pytest.fixture(scope="module")
def editor(make_user, forest_project):
    return {"Authorization": f"Bearer {make_user('analyst', {forest_project: 'editor'}).token}"}


@pytest.fixture(scope="module")
def forest():
    return make_forest("open", size=120, seed=3)


def _scan(server, db_url: str, project: int, points, name: str = "forest.laz") -> int:
    """A scan row whose file is in the server's storage, as an upload would leave it."""
    storage = Path(server.log).parent / "storage"
    with psycopg.connect(db_url, autocommit=True) as conn:
        scan_id = conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, %s, 'uploaded') "
                               "RETURNING id", (project, name)).fetchone()[0]
        key = f"scans/{scan_id}/{name}"
        (storage / key).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(points, bytes):
            (storage / key).write_bytes(points)
        else:
            write_las(storage / key, points, crs="EPSG:32610")
        conn.execute("INSERT INTO scan_files (scan_id, storage_uri, filename) VALUES (%s, %s, %s)",
                     (scan_id, key, name))
    return scan_id


def _run(server, headers, process: str, inputs: dict, timeout: float = 300) -> dict:
    r = requests.post(f"{server}/processes/{process}/execution", json={"inputs": inputs},
                      headers={"Prefer": "respond-async", **headers})
    assert r.status_code == 201, r.text
    return _wait(server, headers, r.json()["jobID"], timeout=timeout)


def test_ingest_then_inventory(server, workers, db_url, forest_project, editor, forest):
    points, truth = forest
    workers.start(1)
    scan_id = _scan(server, db_url, forest_project, points)
    to_ll = Transformer.from_crs(32610, 4326, always_xy=True)
    xs, ys = points.x, points.y
    # two plots over the forest, in lon/lat
    plots = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i, (cx, cy) in enumerate([(xs.min() + 30, ys.min() + 30), (xs.min() + 80, ys.min() + 80)]):
            ring = [to_ll.transform(cx + dx, cy + dy) for dx, dy in ((-12, -12), (12, -12), (12, 12), (-12, 12),
                                                                     (-12, -12))]
            geom = {"type": "MultiPolygon", "coordinates": [[[list(p) for p in ring]]]}
            plots.append(conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, %s, "
                                      "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)) RETURNING id",
                                      (forest_project, f"p{i}", json.dumps(geom))).fetchone()[0])

    job = _run(server, editor, "ingest-scan", {"scan": scan_id})
    assert job["status"] == "successful", job
    scan = requests.get(f"{server}/collections/scans/items/{scan_id}", headers=editor).json()
    props = scan["properties"]
    assert props["status"] == "ready" and props["point_count"] == len(points) and props["crs_epsg"] == 32610
    (lon0, lat0), (lon1, lat1) = to_ll.transform(xs.min(), ys.min()), to_ll.transform(xs.max(), ys.max())
    ring = np.array(scan["geometry"]["coordinates"][0])
    assert ring[:, 0].min() >= lon0 - 1e-4 and ring[:, 0].max() <= lon1 + 1e-4
    assert ring[:, 1].min() >= lat0 - 1e-4 and ring[:, 1].max() <= lat1 + 1e-4

    job = _run(server, editor, "forest-inventory", {"scan": scan_id, "resolution": 0.5})
    assert job["status"] == "successful", job
    results = requests.get(f"{server}/jobs/{job['jobID']}/results", headers=editor).json()
    n_true = len(truth.trees["x"]) if isinstance(truth.trees, dict) else len(truth.trees)
    assert abs(results["summary"]["tree_count"] - n_true) <= 0.1 * n_true
    assert results["summary"]["plots"] == 2
    trees = requests.get(results["trees"]["href"], params={"limit": 10000}, headers=editor).json()
    assert trees["numberMatched"] == results["summary"]["tree_count"]
    crowns = requests.get(results["crowns"]["href"], params={"limit": 1}, headers=editor).json()
    assert crowns["numberMatched"] > 0.9 * trees["numberMatched"]
    storage = Path(server.log).parent / "storage"
    with psycopg.connect(db_url) as conn:
        rasters = dict(conn.execute("SELECT kind, storage_uri FROM rasters WHERE scan_id = %s", (scan_id,)).fetchall())
        metrics = conn.execute("SELECT metrics FROM plots WHERE id = ANY(%s) ORDER BY id", (plots,)).fetchall()
    assert set(rasters) == {"dtm", "chm", "metrics"}
    for kind in ("dtm", "chm", "metrics"):
        assert results[kind]["id"] and (storage / rasters[kind]).exists()
    with rasterio.open(storage / rasters["chm"]) as ds:
        chm = ds.read(1, masked=True)
        assert ds.crs.to_epsg() == 32610
        assert 0 <= chm.min() and abs(float(chm.max()) - float(np.max(truth.trees["height"]))) < 1.5
    from rio_cogeo.cogeo import cog_validate
    assert all(cog_validate(str(storage / rasters[k]))[0] for k in rasters)
    assert all(m[0] and m[0]["zmax"] > 2 for m in metrics)
    # nothing left in the job's work directory
    assert not any((storage / "tmp" / "jobs").glob(f"{job['jobID']}*"))


def test_inventory_survives_a_killed_worker_without_duplicates(server, workers, db_url, forest_project, editor,
                                                               forest):
    points, _ = forest
    scan_id = _scan(server, db_url, forest_project, points, "again.laz")
    first = workers.start(1, CANOPY_JOB_STALE="3", CANOPY_REAP_EVERY="1")
    assert _run(server, editor, "ingest-scan", {"scan": scan_id})["status"] == "successful"
    r = requests.post(f"{server}/processes/forest-inventory/execution", json={"inputs": {"scan": scan_id}},
                      headers={"Prefer": "respond-async", **editor})
    job_id = r.json()["jobID"]
    job = _wait(server, editor, job_id, states=("running",))
    while job["progress"] < 10 and job["status"] == "running":
        job = requests.get(f"{server}/jobs/{job_id}", headers=editor).json()
        time.sleep(0.05)
    workers.kill(first, signal.SIGKILL)
    workers.start(1, CANOPY_JOB_STALE="3", CANOPY_REAP_EVERY="1")
    job = _wait(server, editor, job_id, timeout=300)
    assert job["status"] == "successful", job
    with psycopg.connect(db_url) as conn:
        n_trees = conn.execute("SELECT count(*) FROM trees WHERE scan_id = %s", (scan_id,)).fetchone()[0]
        n_rasters = conn.execute("SELECT count(*) FROM rasters WHERE scan_id = %s", (scan_id,)).fetchone()[0]
        attempts = conn.execute("SELECT attempts FROM jobs WHERE identifier = %s", (job_id,)).fetchone()[0]
    summary = requests.get(f"{server}/jobs/{job_id}/results", headers=editor).json()["summary"]
    assert attempts == 2 and n_trees == summary["tree_count"] and n_rasters == 3


def test_algorithms_are_chosen_through_the_process_inputs(server, workers, db_url, forest_project, editor, forest):
    """The inputs are the algorithm objects as JSON, described by the process (generated from them)."""
    desc = requests.get(f"{server}/processes/segment-crowns", headers=editor).json()
    crowns = desc["inputs"]["crowns"]["schema"]["oneOf"]
    assert [v["title"] for v in crowns] == ["watershed", "dalponte2016"]
    assert desc["inputs"]["trees"]["schema"]["properties"]["hmin"]["default"] == 2.0
    points, truth = forest
    scan_id = _scan(server, db_url, forest_project, points, "algorithms.laz")
    workers.start(1)
    assert _run(server, editor, "ingest-scan", {"scan": scan_id})["status"] == "successful"
    counts = {}
    for ws in (2.0, 6.0):
        job = _run(server, editor, "segment-crowns", {
            "scan": scan_id, "chm": {"algorithm": "p2r", "subcircle": 0.2},
            "trees": {"ws": ws, "hmin": 3}, "crowns": {"algorithm": "dalponte2016", "max_cr": 6}})
        assert job["status"] == "successful", job
        counts[ws] = requests.get(f"{server}/jobs/{job['jobID']}/results", headers=editor).json()["summary"]["tree_count"]
    # a narrow fixed window splits crowns the wide one keeps whole: the window reached the engine
    assert counts[2.0] > counts[6.0] > 0.5 * len(truth.trees["x"])


def test_bad_lidar_inputs(server, workers, db_url, forest_project, editor):
    r = requests.post(f"{server}/processes/forest-inventory/execution", json={"inputs": {"scan": 987654}},
                      headers=editor)
    assert r.status_code == 404 and "scan" in r.text
    garbage = _scan(server, db_url, forest_project, b"this is not a point cloud\n" * 100, "fake.laz")
    for inputs, needle in (({"scan": garbage, "resolution": 0}, "resolution"),
                           ({"scan": garbage, "colour": "red"}, "colour"),
                           ({"scan": garbage, "trees": {"shape": "triangle"}}, "trees"),
                           ({"scan": garbage, "chm": {"algorithm": "nosuch"}}, "chm"),
                           ({"scan": garbage, "ground": {"rigidness": 7}}, "ground"),
                           ({"scan": garbage, "trees": {"ws": {"k": 0.1, "colour": 1}}}, "trees")):
        r = requests.post(f"{server}/processes/forest-inventory/execution", json={"inputs": inputs}, headers=editor)
        assert r.status_code == 400 and needle in r.text, r.text
    workers.start(1)
    job = _run(server, editor, "ingest-scan", {"scan": garbage})
    assert job["status"] == "failed" and "LAS" in job["message"], job
    scan = requests.get(f"{server}/collections/scans/items/{garbage}", headers=editor).json()["properties"]
    assert scan["status"] == "failed" and scan["error"] == job["message"]
