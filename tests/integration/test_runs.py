"""Runs are kept (issue 17): every inventory of a scan stays reachable at the links its
job's results gave, the collections show the latest by default and any run on request,
dismissing a job removes its run (rows and files), and the collections' extents are the
data's."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import requests
from pyproj import Transformer

from processes.lidar.synthetic import make_forest
from processes.lidar.version import ENGINE_VERSION
from server.extents import WORLD, _extent
from tests.integration.test_lidar_processes import _run, _scan


@pytest.fixture(scope="module")
def runs_project(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name, visibility) VALUES ('runs', 'private') "
                            "RETURNING id").fetchone()[0]


@pytest.fixture(scope="module")
def editor(make_user, runs_project):
    return {"Authorization": f"Bearer {make_user('analyst', {runs_project: 'editor'}).token}"}


def _links(value) -> list[str]:
    """Every link of a job's results."""
    if isinstance(value, dict):
        return [v for k, v in value.items() if k in ("href", "tilejson", "feature")] + \
            [u for k, v in value.items() if k not in ("href", "tilejson", "feature") for u in _links(v)]
    if isinstance(value, list):
        return [u for v in value for u in _links(v)]
    return []


def _items(server, headers, collection: str, **params) -> dict:
    r = requests.get(f"{server}/collections/{collection}/items", params={"limit": 10000, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _runs_of(body: dict) -> set:
    return {f["properties"]["run_id"] for f in body["features"]}


def _extent_sql(conn, table: str, geom: str, where: str = "TRUE", args: tuple = ()) -> list[float]:
    row = conn.execute(f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                       f"(SELECT ST_Extent({geom}) e FROM {table} WHERE {where}) t", args).fetchone()
    return list(row)


_SEEN_BY_EDITOR = "project_id = %s OR project_id IN (SELECT id FROM projects WHERE visibility = 'public')"


def _collection_bbox(server, headers, collection: str) -> list[float]:
    r = requests.get(f"{server}/collections/{collection}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["extent"]["spatial"]["bbox"][0]


def test_runs_are_kept(server, workers, db_url, runs_project, editor, admin_headers):
    points, truth = make_forest("open", size=100, seed=11)
    workers.start(1)
    scan_id = _scan(server, db_url, runs_project, points, "runs.laz")
    to_ll = Transformer.from_crs(32610, 4326, always_xy=True)
    cx, cy = float(points.x.min()) + 50, float(points.y.min()) + 50
    ring = [list(to_ll.transform(cx + dx, cy + dy)) for dx, dy in ((-15, -15), (15, -15), (15, 15), (-15, 15),
                                                                  (-15, -15))]
    with psycopg.connect(db_url, autocommit=True) as conn:
        plot = conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, 'runs plot', "
                            "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)) RETURNING id",
                            (runs_project, json.dumps({"type": "MultiPolygon", "coordinates": [[ring]]}))).fetchone()[0]
    assert _run(server, editor, "ingest-scan", {"scan": scan_id})["status"] == "successful"

    first = _run(server, editor, "forest-inventory", {"scan": scan_id, "resolution": 0.5, "trees": {"ws": 3}})
    assert first["status"] == "successful", first
    one = first["jobID"]
    results1 = requests.get(f"{server}/jobs/{one}/results", headers=editor).json()
    second = _run(server, editor, "forest-inventory", {"scan": scan_id, "resolution": 1.0, "trees": {"ws": 5}})
    assert second["status"] == "successful", second
    two = second["jobID"]
    results2 = requests.get(f"{server}/jobs/{two}/results", headers=editor).json()
    n1, n2 = results1["summary"]["tree_count"], results2["summary"]["tree_count"]
    assert n1 > 0 and n2 > 0 and n1 != n2               # different parameters, different inventories
    raster_ids1 = {results1[k]["id"] for k in ("dtm", "chm", "metrics")}
    raster_ids2 = {results2[k]["id"] for k in ("dtm", "chm", "metrics")}
    assert not raster_ids1 & raster_ids2

    # every link of the first job's results still answers, with the first run's products
    links = _links(results1)
    assert len(links) >= 10
    for url in links:
        assert requests.get(url, headers=editor).status_code == 200, url
    trees1 = requests.get(results1["trees"]["href"], params={"limit": 10000}, headers=editor).json()
    assert trees1["numberMatched"] == n1 and _runs_of(trees1) == {one}
    crowns1 = requests.get(results1["crowns"]["href"], params={"limit": 10000}, headers=editor).json()
    assert crowns1["numberReturned"] > 0.9 * n1 and _runs_of(crowns1) == {one}
    for kind in ("dtm", "chm", "metrics"):
        feature = requests.get(results1[kind]["feature"], headers=editor).json()
        assert feature["properties"]["run_id"] == one and feature["properties"]["kind"] == kind
        cog = requests.get(results1[kind]["href"], headers={**editor, "Range": "bytes=0-3"})
        assert cog.status_code == 206 and cog.content[:2] in (b"II", b"MM")

    # the collections show the second run by default, the first on request
    default = _items(server, editor, "trees", scan_id=scan_id)
    assert default["numberMatched"] == n2 and _runs_of(default) == {two}
    assert _runs_of(_items(server, editor, "crowns", scan_id=scan_id)) == {two}
    assert {f["id"] for f in _items(server, editor, "rasters", scan_id=scan_id)["features"]} == raster_ids2
    assert {f["id"] for f in _items(server, editor, "rasters", scan_id=scan_id, run=one)["features"]} == raster_ids1
    assert _items(server, editor, "trees", scan_id=scan_id, run=one)["numberMatched"] == n1
    assert _items(server, editor, "trees", scan_id=scan_id, run="all")["numberReturned"] == n1 + n2
    assert requests.get(f"{server}/collections/trees/items", params={"run": "no such run!"},
                        headers=editor).status_code == 400
    openapi = requests.get(f"{server}/openapi", params={"f": "json"}).json()
    assert "run" in [p.get("name") for p in openapi["paths"]["/collections/trees/items"]["get"]["parameters"]]
    assert "get" in openapi["paths"]["/scans/{scanId}/runs"] and "delete" in openapi["paths"]["/scans/{scanId}"]

    # the history
    history = requests.get(f"{server}/scans/{scan_id}/runs", headers=editor).json()
    assert [r["id"] for r in history["runs"]] == [two, one] and history["current_run"] == two
    latest, earlier = history["runs"]
    assert latest["current"] and not earlier["current"] and latest["process"] == "forest-inventory"
    assert earlier["parameters"]["resolution"] == 0.5 and earlier["parameters"]["trees"] == {"ws": 3}
    assert latest["parameters"]["resolution"] == 1.0 and earlier["engine_version"] == ENGINE_VERSION
    assert set(earlier["products"]) == {"chm", "dtm", "metrics", "plot_metrics", "trees"}
    assert earlier["current_products"] == [] and set(latest["current_products"]) == set(latest["products"])
    with psycopg.connect(db_url) as conn:
        trees_bbox1 = _extent_sql(conn, "trees", "geom", "run_id = %s", (one,))
        plot_metrics = dict(conn.execute("SELECT run_id, metrics FROM plot_metrics WHERE plot_id = %s",
                                         (plot,)).fetchall())
        plot_now = conn.execute("SELECT metrics FROM plots WHERE id = %s", (plot,)).fetchone()[0]
    assert earlier["extents"]["trees"] == pytest.approx(trees_bbox1, abs=1e-9)
    assert earlier["bbox"][0] <= trees_bbox1[0] and earlier["bbox"][2] >= trees_bbox1[2]
    assert set(plot_metrics) == {one, two} and plot_now == plot_metrics[two]
    assert {l["href"].rsplit("/", 2)[-2] for l in earlier["links"] if l["rel"] == "enclosure"} == \
        {str(i) for i in raster_ids1}
    for link in earlier["links"]:
        assert requests.get(link["href"], headers=editor if link["rel"] != "enclosure" else
                            {**editor, "Range": "bytes=0-3"}).status_code in (200, 206), link
    assert requests.get(f"{server}/scans/{scan_id}/runs").status_code == 404       # the scan's access policy

    # true extents: the data's bounding box, per caller
    with psycopg.connect(db_url) as conn:
        for collection, geom in (("trees", "geom"), ("crowns", "geom"), ("rasters", "footprint"),
                                 ("plots", "geom"), ("scans", "footprint")):
            truth_all = _extent_sql(conn, collection, geom)
            assert _collection_bbox(server, admin_headers, collection) == pytest.approx(truth_all, abs=1e-6)
        seen = _extent_sql(conn, "trees", "geom", _SEEN_BY_EDITOR, (runs_project,))
    assert _collection_bbox(server, editor, "trees") == pytest.approx(seen, abs=1e-6)
    body = requests.get(f"{server}/collections", headers=editor).json()
    trees_desc = next(c for c in body["collections"] if c["id"] == "trees")
    temporal = trees_desc["extent"]["temporal"]["interval"][0]
    assert temporal[0] is not None and temporal[1] is not None

    # dismissing the first job removes its run: rows and files; the second stays current
    storage = Path(server.log).parent / "storage"
    with psycopg.connect(db_url) as conn:
        files1 = [storage / r[0] for r in conn.execute("SELECT storage_uri FROM rasters WHERE run_id = %s", (one,))]
    assert len(files1) == 3 and all(f.exists() for f in files1)
    third = _run(server, editor, "detect-trees", {"scan": scan_id, "trees": {"ws": 4}})
    assert third["status"] == "successful", third
    three = third["jobID"]
    assert requests.delete(f"{server}/jobs/{one}", headers=editor).json()["status"] == "dismissed"
    with psycopg.connect(db_url) as conn:
        left = [conn.execute(f"SELECT count(*) FROM {t} WHERE run_id = %s", (one,)).fetchone()[0]
                for t in ("trees", "crowns", "rasters")]
        left.append(conn.execute("SELECT count(*) FROM plot_metrics WHERE run_id = %s", (one,)).fetchone()[0])
        current = conn.execute("SELECT current_run_id FROM scans WHERE id = %s", (scan_id,)).fetchone()[0]
    assert left == [0, 0, 0, 0] and current == three
    assert not any(f.exists() for f in files1)
    assert requests.get(f"{server}/jobs/{one}/results", headers=editor).status_code == 404
    assert requests.get(results1["trees"]["href"], headers=editor).json()["numberReturned"] == 0
    assert requests.get(results1["chm"]["href"], headers=editor).status_code == 404
    assert [r["id"] for r in requests.get(f"{server}/scans/{scan_id}/runs", headers=editor).json()["runs"]] == \
        [three, two]
    # trees now come from the third run, the rasters still from the second
    assert _runs_of(_items(server, editor, "trees", scan_id=scan_id)) == {three}
    assert {f["id"] for f in _items(server, editor, "rasters", scan_id=scan_id)["features"]} == raster_ids2

    # dismissing the current run makes the earlier one current again
    assert requests.delete(f"{server}/jobs/{three}", headers=editor).json()["status"] == "dismissed"
    history = requests.get(f"{server}/scans/{scan_id}/runs", headers=editor).json()
    assert history["current_run"] == two and [r["id"] for r in history["runs"]] == [two]
    assert history["runs"][0]["current"]
    again = _items(server, editor, "trees", scan_id=scan_id)
    assert again["numberMatched"] == n2 and _runs_of(again) == {two}
    for url in _links(results2):
        assert requests.get(url, headers=editor).status_code == 200, url
    with psycopg.connect(db_url) as conn:
        assert _collection_bbox(server, editor, "trees") == pytest.approx(
            _extent_sql(conn, "trees", "geom", _SEEN_BY_EDITOR, (runs_project,)), abs=1e-6)
        assert conn.execute("SELECT metrics FROM plots WHERE id = %s", (plot,)).fetchone()[0] == plot_metrics[two]

    # deleting the scan removes every run and file of it
    with psycopg.connect(db_url) as conn:
        files2 = [storage / r[0] for r in conn.execute("SELECT storage_uri FROM rasters WHERE scan_id = %s",
                                                        (scan_id,))]
        files2 += [storage / r[0] for r in conn.execute("SELECT storage_uri FROM scan_files WHERE scan_id = %s",
                                                         (scan_id,))]
    assert len(files2) == 4 and all(f.exists() for f in files2)
    assert requests.delete(f"{server}/scans/{scan_id}").status_code == 401     # anonymous write
    assert requests.delete(f"{server}/scans/{scan_id}", headers=editor).status_code == 204
    assert not any(f.exists() for f in files2)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE scan_id = %s", (scan_id,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM trees WHERE scan_id = %s", (scan_id,)).fetchone()[0] == 0
    assert requests.get(f"{server}/scans/{scan_id}/runs", headers=editor).status_code == 404
    with psycopg.connect(db_url) as conn:
        seen = _extent_sql(conn, "trees", "geom", _SEEN_BY_EDITOR, (runs_project,))
    assert _collection_bbox(server, editor, "trees") == (WORLD if seen[0] is None else pytest.approx(seen, abs=1e-6))


def test_empty_extent_is_the_world_without_time():
    assert _extent(None, None, None, None, None, None) == {
        "spatial": {"bbox": [WORLD], "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}}


def test_deleting_a_project_removes_its_files(server, db_url, make_user):
    storage = Path(server.log).parent / "storage"
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name) VALUES ('doomed') RETURNING id").fetchone()[0]
    owner = {"Authorization": f"Bearer {make_user('analyst', {project: 'owner'}).token}"}
    points, _ = make_forest("open", size=30, seed=2)
    scan_id = _scan(server, db_url, project, points, "doomed.laz")
    key = f"rasters/scan-{scan_id}/chm-x.tif"
    (storage / key).parent.mkdir(parents=True, exist_ok=True)
    (storage / key).write_bytes(b"II*\x00")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO rasters (scan_id, project_id, kind, storage_uri) VALUES (%s, %s, 'chm', %s)",
                     (scan_id, project, key))
    files = [storage / key, storage / f"scans/{scan_id}/doomed.laz"]
    assert all(f.exists() for f in files)
    assert requests.delete(f"{server}/projects/{project}", headers=owner).status_code == 204
    assert not any(f.exists() for f in files)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM collection_extents WHERE project_id = %s",
                            (project,)).fetchone()[0] == 0
