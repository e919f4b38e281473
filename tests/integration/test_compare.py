"""The `compare` process as a job (issue 17): two scans of one simulated forest, the second
grown and partly harvested, each inventoried by `forest-inventory`, then compared; the
job's results hold the harvested area (within 5 % of the truth) and the trees' growth
(median within 0.2 m), its rasters are COGs kept with the after run's scan, and only a
caller who may read both runs (and change the after one's project) may compare them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
import requests
from rio_cogeo.cogeo import cog_validate

from tests.integration.test_lidar_processes import _run, _scan
from tests.unit.lidar.test_change import FAMILIES, simulate_change


@pytest.fixture(scope="module")
def change_project(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name, visibility) VALUES ('compare', 'private') "
                            "RETURNING id").fetchone()[0]


@pytest.fixture(scope="module")
def editor(make_user, change_project):
    return {"Authorization": f"Bearer {make_user('analyst', {change_project: 'editor'}).token}"}


def test_compare_finds_the_harvest_and_the_growth(server, workers, db_url, change_project, editor, make_user):
    sim = simulate_change(*FAMILIES["open-hilly"])
    workers.start(1)
    runs = {}
    for name in ("before", "after"):
        scan_id = _scan(server, db_url, change_project, sim[name], f"{name}.laz")
        assert _run(server, editor, "ingest-scan", {"scan": scan_id})["status"] == "successful"
        job = _run(server, editor, "forest-inventory", {"scan": scan_id, "resolution": 0.5})
        assert job["status"] == "successful", job
        runs[name] = (job["jobID"], scan_id)

    job = _run(server, editor, "compare", {"before": runs["before"][0], "after": runs["after"][0]})
    assert job["status"] == "successful", job
    results = requests.get(f"{server}/jobs/{job['jobID']}/results", headers=editor).json()
    lost = results["areas"]["canopy_lost"]["m2"]
    growth = results["tree_growth"]
    true_growth = float(np.median(sim["growth"]))
    print(f"\ncompare job: canopy lost {lost:.1f} m² vs true {sim['true_lost']:.1f} m² "
          f"({100 * (lost / sim['true_lost'] - 1):+.1f} %); median growth {growth['growth_median']:.3f} m vs true "
          f"{true_growth:.3f} m; matched {growth['matched']}, lost {growth['lost']}, new {growth['new']}")
    assert abs(lost / sim["true_lost"] - 1) <= 0.05
    assert abs(growth["growth_median"] - true_growth) <= 0.2
    assert growth["lost"] >= 0.8 * sim["felled"].sum() and results["before"]["run"] == runs["before"][0]
    assert results["parameters"]["drop"] == 3.0 and results["classes"]["2"] == "canopy_lost"

    # the two rasters: COGs of the after scan, in the compare job's run, linked from the results
    storage = Path(server.log).parent / "storage"
    with psycopg.connect(db_url) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT kind, id, storage_uri, scan_id, run_id FROM rasters WHERE run_id = %s", (job["jobID"],))}
    assert set(rows) == {"chm_diff", "change"}
    for kind, (rid, uri, scan_id, _) in rows.items():
        assert results[kind]["id"] == rid and scan_id == runs["after"][1]
        ok, errors, warnings = cog_validate(str(storage / uri), quiet=True)
        assert ok and not errors and not warnings, (errors, warnings)
        r = requests.get(f"{server}{results[kind]['href'].removeprefix(server)}", headers=editor)
        assert r.status_code == 200 and r.content[:2] in (b"II", b"MM")
    with rasterio.open(storage / rows["change"][1]) as ds:
        classes = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0 and ds.crs.to_epsg() == 32610
        cell = abs(ds.res[0] * ds.res[1])
    assert np.count_nonzero(classes == 2) * cell == results["areas"]["canopy_lost"]["m2_cells"]
    with rasterio.open(storage / rows["chm_diff"][1]) as ds:
        diff = ds.read(1, masked=True)
    assert float(np.ma.median(diff[classes == 2])) < -5        # felled crowns dropped by their height
    assert abs(float(np.ma.median(diff[classes == 4])) - true_growth) < 0.3

    described = requests.get(f"{server}/processes/compare", headers=editor).json()
    assert {"before", "after", "hmin", "drop", "min_area"} <= set(described["inputs"])
    assert described["inputs"]["hmin"]["schema"]["default"] == 5.0

    # access: an unknown run is 404, a user who cannot see the project gets 404, a viewer 403
    r = requests.post(f"{server}/processes/compare/execution", headers=editor,
                      json={"inputs": {"before": "no-such-run", "after": runs["after"][0]}})
    assert r.status_code == 404 and "no run" in r.json()["detail"]
    outsider = {"Authorization": f"Bearer {make_user('analyst').token}"}
    r = requests.post(f"{server}/processes/compare/execution", headers=outsider,
                      json={"inputs": {"before": runs["before"][0], "after": runs["after"][0]}})
    assert r.status_code == 404, r.text
    viewer = {"Authorization": f"Bearer {make_user('viewer', {change_project: 'viewer'}).token}"}
    r = requests.post(f"{server}/processes/compare/execution", headers=viewer,
                      json={"inputs": {"before": runs["before"][0], "after": runs["after"][0]}})
    assert r.status_code == 403, r.text
    r = requests.post(f"{server}/processes/compare/execution", headers=editor,
                      json={"inputs": {"before": runs["before"][0], "after": runs["after"][0], "drop": -1}})
    assert r.status_code == 400, r.text
