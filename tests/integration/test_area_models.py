"""The area-based loop through the HTTP API (issue 18): a simulated 4 ha forest of managed
blocks is uploaded as a scan; 20 circular 400 m² plots carry attributes measured on the
simulated trees (with field errors); plot-metrics and grid-metrics (20 m) run as jobs,
then fit-area-model stores a model per attribute (listed at /area-models with the
project's access policy) and predict-area-model maps one as a COG with totals whose
confidence interval holds the forest's true total."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
import requests
import shapely
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from shapely.ops import transform as shapely_transform

from processes.lidar import aba_forest as af
from tests.integration.test_lidar_processes import _run, _scan

AREA = 400.0


@pytest.fixture(scope="module")
def aba_project(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name, visibility) VALUES ('aba', 'private') "
                            "RETURNING id").fetchone()[0]


@pytest.fixture(scope="module")
def editor(make_user, aba_project):
    return {"Authorization": f"Bearer {make_user('analyst', {aba_project: 'editor'}).token}"}


def _insert_plot(conn, project: int, name: str, polygon, attributes: dict) -> int:
    to_ll = Transformer.from_crs(32610, 4326, always_xy=True)
    geom = shapely.MultiPolygon([shapely_transform(to_ll.transform, polygon)])
    return conn.execute("INSERT INTO plots (project_id, name, geom, attributes) VALUES (%s, %s, "
                        "ST_SetSRID(ST_GeomFromText(%s), 4326), %s) RETURNING id",
                        (project, name, geom.wkt, json.dumps(attributes))).fetchone()[0]


def test_fit_list_and_predict_through_the_api(server, workers, db_url, aba_project, editor, make_user):
    forest = af.make_aba_forest("blocks", size=200.0, seed=5, keep_raw=True)
    centres = af.place_plots(forest, 20, AREA, seed=5)
    measured, _, recorded = af.field_plots(forest, centres, AREA, seed=5)
    workers.start(1)
    scan_id = _scan(server, db_url, aba_project, forest.raw, "aba.laz")
    r = np.sqrt(AREA / np.pi)
    with psycopg.connect(db_url, autocommit=True) as conn:
        plots = [_insert_plot(conn, aba_project, f"aba{i}", shapely.Point(x, y).buffer(r, quad_segs=32),
                              {k: float(measured[k][i]) for k in af.ATTRIBUTES} | {"units": af.ATTRIBUTES})
                 for i, (x, y) in enumerate(recorded)]
        outside = _insert_plot(conn, aba_project, "outside", shapely.Point(forest.bounds[2] + 50,
                                                                           forest.bounds[3] - 50).buffer(r),
                               {"basal_area": 30.0})
    for process, inputs in (("ingest-scan", {"scan": scan_id}), ("plot-metrics", {"scan": scan_id, "plots": plots}),
                            ("grid-metrics", {"scan": scan_id, "resolution": 20})):
        job = _run(server, editor, process, inputs)
        assert job["status"] == "successful", job

    # guard rails: a plot the scan does not cover, more metrics than 20 plots support
    job = _run(server, editor, "fit-area-model", {"scan": scan_id, "attributes": ["basal_area"],
                                                  "plots": plots + [outside]})
    assert job["status"] == "failed" and f"[{outside}]" in job["message"] and "footprint" in job["message"]
    job = _run(server, editor, "fit-area-model", {"scan": scan_id, "attributes": ["basal_area"], "max_metrics": 3})
    assert job["status"] == "failed" and "20 plots support at most 2 metrics" in job["message"], job

    job = _run(server, editor, "fit-area-model", {"scan": scan_id, "attributes": ["volume", "basal_area"],
                                                  "validation": "loo"})
    assert job["status"] == "successful", job
    results = requests.get(f"{server}/jobs/{job['jobID']}/results", headers=editor).json()
    models = {m["attribute"]: m for m in results["models"]}
    assert set(models) == {"volume", "basal_area"} and results["resolution_m"] == 20.0
    for m in models.values():
        v = m["validation"]
        print(f"\n  API fit {m['attribute']}: LOO RMSE {v['rmse_pct']:.1f} % (mean baseline "
              f"{v['baseline_rmse_pct']:.1f} %), R² {v['r2']:.2f}, metrics {m['metrics']}")
        assert v["scheme"] == "loo" and v["rmse_pct"] < 0.75 * v["baseline_rmse_pct"]
        assert m["unit"] == af.ATTRIBUTES[m["attribute"]] and 1 <= len(m["metrics"]) <= 2
        assert m["href"].startswith(server) and m["href"].endswith(f"/area-models/{m['id']}")

    # the resource: full page for members, 404 for others, listed with paging
    vol = requests.get(models["volume"]["href"], headers=editor)
    assert vol.status_code == 200, vol.text
    page = vol.json()
    assert page["scan_id"] == scan_id and page["method"] == "linear" and page["plots"] == sorted(plots)
    assert len(page["validation"]["observed"]) == 20 == len(page["validation"]["predicted"])
    assert np.allclose(sorted(page["validation"]["observed"]), sorted(measured["volume"]))
    assert set(page["parameters"]["training_range"]) == set(page["metrics"])
    html = requests.get(models["volume"]["href"], params={"f": "html"}, headers=editor)
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    assert html.text.count('class="point"') == 2 * 20 and "leave-one-out" in html.text     # two charts of 20 plots
    assert f"{page['validation']['rmse_pct']:.1f}" in html.text and "one-to-one" in html.text
    stranger = {"Authorization": f"Bearer {make_user('analyst').token}"}
    assert requests.get(models["volume"]["href"], headers=stranger).status_code == 404
    assert requests.get(f"{server}/area-models/{models['volume']['id']}").status_code == 404
    assert requests.get(models["volume"]["href"], params={"f": "html"}, headers=stranger).status_code == 404
    listed = requests.get(f"{server}/area-models", params={"scan": scan_id, "limit": 1}, headers=editor).json()
    assert [m["id"] for m in listed["models"]] == [models["basal_area"]["id"]]
    nxt = next(link["href"] for link in listed["links"] if link["rel"] == "next")
    assert [m["id"] for m in requests.get(nxt, headers=editor).json()["models"]] == [models["volume"]["id"]]
    assert requests.get(f"{server}/area-models", params={"scan": scan_id}, headers=stranger).json()["models"] == []
    assert requests.get(f"{server}/area-models", params={"limit": 0}, headers=editor).status_code == 400
    doc = requests.get(f"{server}/openapi", params={"f": "json"}).json()
    assert "/area-models/{modelId}" in doc["paths"] and "/area-models" in doc["paths"]
    landing = requests.get(f"{server}/", params={"f": "json"}).json()
    assert any(link["href"] == f"{server}/area-models" for link in landing["links"])

    # the map: one COG, its unit in the band, totals with a CI that holds the truth
    to_ll = Transformer.from_crs(32610, 4326, always_xy=True)
    x0, y0, x1, y1 = forest.bounds
    stand = shapely_transform(to_ll.transform, shapely.box(x0, y0, x0 + 100, y1))    # the western half
    job = _run(server, editor, "predict-area-model", {"model": [models["volume"]["id"], models["basal_area"]["id"]],
                                                      "scan": scan_id, "stand": shapely.geometry.mapping(stand)})
    assert job["status"] == "successful", job
    results = requests.get(f"{server}/jobs/{job['jobID']}/results", headers=editor).json()
    true_total = forest.totals()["volume"]
    west = forest.trees["x"] < x0 + 100
    true_west = float(af.stem_volume(forest.trees["dbh"][west], forest.trees["height"][west]).sum())
    volume, basal = results["predictions"]
    assert (volume["attribute"], volume["band"], basal["attribute"], basal["band"]) == ("volume", 1, "basal_area", 2)
    tot, part = volume["totals"]["scan"], volume["totals"]["stand"]
    print(f"  API predict volume: total {tot['total']:.0f} m³ [{tot['ci_low']:.0f}, {tot['ci_high']:.0f}] vs true "
          f"{true_total:.0f}; western half {part['total']:.0f} [{part['ci_low']:.0f}, {part['ci_high']:.0f}] vs "
          f"true {true_west:.0f}; extrapolated cells {volume['extrapolated_share']:.0%}")
    assert tot["unit"] == "m3" and tot["cells"] == 100 and tot["area_ha"] == pytest.approx(4.0)
    assert tot["ci_low"] <= true_total <= tot["ci_high"]
    assert part["cells"] == 50 and part["ci_low"] <= true_west <= part["ci_high"]
    ba = basal["totals"]["scan"]
    print(f"  API predict basal area (same job): total {ba['total']:.1f} m² [{ba['ci_low']:.1f}, {ba['ci_high']:.1f}] "
          f"vs true {forest.totals()['basal_area']:.1f}")
    assert ba["unit"] == "m2" and ba["ci_low"] <= forest.totals()["basal_area"] <= ba["ci_high"]
    storage = Path(server.log).parent / "storage"
    with psycopg.connect(db_url) as conn:
        kind, uri, rid = conn.execute("SELECT kind, storage_uri, id FROM rasters WHERE run_id = %s",
                                      (job["jobID"],)).fetchone()
    assert kind == "aba" and results["aba"]["id"] == rid
    ok, errors, warnings = cog_validate(str(storage / uri), quiet=True)
    assert ok and not errors, errors
    with rasterio.open(storage / uri) as ds:
        assert ds.descriptions == ("volume", "basal_area", "volume_extrapolated", "basal_area_extrapolated")
        assert ds.tags(1)["units"] == "m3/ha" and ds.tags(2)["units"] == "m2/ha" and ds.tags(3)["units"] == "1"
        for i, p in ((1, volume), (2, basal)):
            band = ds.read(i, masked=True)        # a model's cells: where every metric it reads has a value
            assert band.count() == p["totals"]["scan"]["cells"]
            if p is volume:                       # its 100 cells lie wholly inside the footprint
                assert float(band.sum()) * 0.04 == pytest.approx(p["totals"]["scan"]["total"], rel=1e-4)
            else:                                 # two more cells outside the footprint count for nothing
                assert band.count() == 102 and p["totals"]["scan"]["area_ha"] == pytest.approx(4.0)
            flags = ds.read(i + 2, masked=True).compressed()
            assert set(np.unique(flags)) <= {0.0, 1.0} and flags.mean() == pytest.approx(p["extrapolated_share"])
    tile = requests.get(f"{server}/rasters/{rid}/tiles/WebMercatorQuad/16/0/0.png", headers=editor)
    assert tile.status_code in (200, 204, 404)        # outside the raster is fine; never a 500
    tj = requests.get(f"{server}/rasters/{rid}/tilejson.json", headers=editor)
    assert tj.status_code == 200, tj.text

    # a model whose cells do not match the grid metrics is refused: 25 m cells for 400 m² plots
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE area_models SET resolution_m = 25 WHERE id = %s", (models["basal_area"]["id"],))
    job = _run(server, editor, "predict-area-model", {"model": models["basal_area"]["id"], "scan": scan_id})
    assert job["status"] == "failed" and "no grid metrics at the models' 25 m" in job["message"], job
    job = _run(server, editor, "predict-area-model", {"model": [models["volume"]["id"], models["basal_area"]["id"]],
                                                      "scan": scan_id})
    assert job["status"] == "failed" and f"models [{models['basal_area']['id']}] were fitted at another " \
        "resolution" in job["message"], job
