"""Exports of the collections (GeoPackage, zipped Shapefile, FlatGeobuf, flat CSV)
against the real server: GDAL opens each, its features equal the GeoJSON items, the
CSV columns are flat and carry the native coordinates, and the filters and the
access rule of the GeoJSON items apply."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import zipfile
from pathlib import Path

import psycopg
import pytest
import requests

pytestmark = pytest.mark.integration

EPSG = 32610                 # UTM 10N: the scans' native CRS
X0, Y0 = 500_000.0, 5_000_000.0
METRICS = {"zmean": 12.5, "zq95": 24.25, "cover": 81.5, "zskew": -0.3, "n": 1200}
FORMATS = ("gpkg", "shp", "fgb", "csv")


@pytest.fixture(scope="module")
def world(db_url, make_user):
    """A public project (a scan in UTM with 25 trees, their crowns and 3 plots) and a
    private one (2 trees); a member of the private one and an outsider."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        def project(vis):
            return conn.execute("INSERT INTO projects (name, visibility) VALUES (%s, %s) RETURNING id",
                                (f"exports {vis}", vis)).fetchone()[0]

        def scan(pid):
            return conn.execute(
                "INSERT INTO scans (project_id, name, status, crs_epsg, footprint) VALUES (%s, 'x', 'ready', %s, "
                "ST_Transform(ST_MakeEnvelope(%s, %s, %s, %s, %s), 4326)) RETURNING id",
                (pid, EPSG, X0, Y0, X0 + 100, Y0 + 100, EPSG)).fetchone()[0]

        def trees(pid, sid, n):
            return [r[0] for r in conn.execute(
                "INSERT INTO trees (scan_id, project_id, x, y, geom, height_m, crown_area_m2, crown_diameter_m) "
                "SELECT %s, %s, x, y, ST_Transform(ST_SetSRID(ST_MakePoint(x, y), %s), 4326), h, h * 1.5, h / 4 "
                "FROM (SELECT %s + i * 3.25 AS x, %s + (i %% 5) * 7.125 AS y, 10 + i * 0.75 AS h "
                "FROM generate_series(0, %s - 1) i) g RETURNING id",
                (sid, pid, EPSG, X0, Y0, n)).fetchall()]

        pub, priv = project("public"), project("private")
        s_pub, s_priv = scan(pub), scan(priv)
        pub_trees, priv_trees = trees(pub, s_pub, 25), trees(priv, s_priv, 2)
        conn.execute("INSERT INTO crowns (tree_id, scan_id, project_id, geom, area_m2) "
                     "SELECT id, scan_id, project_id, ST_Transform(ST_Buffer(ST_SetSRID(ST_MakePoint(x, y), %s), "
                     "1.5, 4), 4326), crown_area_m2 FROM trees WHERE scan_id = %s", (EPSG, s_pub))
        plots = [conn.execute(
            "INSERT INTO plots (project_id, name, geom, metrics, attributes) VALUES (%s, %s, "
            "ST_Multi(ST_Transform(ST_MakeEnvelope(%s, %s, %s, %s, %s), 4326)), %s, %s) RETURNING id",
            (pub, f"plot {i}", X0 + 20 * i, Y0, X0 + 20 * i + 15, Y0 + 15, EPSG,
             json.dumps({k: v + i for k, v in METRICS.items()}),
             json.dumps({"stand": f"S{i}", "age": 40 + i}))).fetchone()[0] for i in range(3)]
    member = make_user("viewer", {priv: "viewer"})
    outsider = make_user("viewer")
    return {"pub": pub, "priv": priv, "scan": s_pub, "trees": pub_trees, "priv_trees": priv_trees,
            "plots": plots, "member": {"Authorization": f"Bearer {member.token}"},
            "outsider": {"Authorization": f"Bearer {outsider.token}"}}


def _download(server, collection, fmt, tmp_path: Path, headers=None, **params) -> Path:
    r = requests.get(f"{server}/collections/{collection}/items", params={"f": fmt, **params}, headers=headers)
    assert r.status_code == 200, r.text
    name = re.search(r'filename="?([^";]+)', r.headers["Content-Disposition"]).group(1)
    assert r.headers["Content-Disposition"].startswith("attachment")
    path = tmp_path / name
    path.write_bytes(r.content)
    return path


def _gdal_path(path: Path) -> str:
    return f"/vsizip/{path}" if path.suffix == ".zip" else str(path)


def _ogr_features(path: Path, csv_points: bool = False) -> list[dict]:
    """The file's features through ogr2ogr as GeoJSON."""
    out = path.with_suffix(".out.geojson")
    opts = ["-oo", "AUTODETECT_TYPE=YES"] if path.suffix == ".csv" else []
    if csv_points:
        opts += ["-oo", "X_POSSIBLE_NAMES=lon", "-oo", "Y_POSSIBLE_NAMES=lat"]
    elif path.suffix == ".csv":
        opts += ["-oo", "GEOM_POSSIBLE_NAMES=WKT", "-oo", "KEEP_GEOM_COLUMNS=NO"]
    done = subprocess.run(["ogr2ogr", "-f", "GeoJSON", str(out), _gdal_path(path), *opts],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())["features"]


def _items(server, collection, headers=None, **params) -> list[dict]:
    page = requests.get(f"{server}/collections/{collection}/items", params={"limit": 10000, **params},
                        headers=headers).json()
    return page["features"]


def _close(a, b, tol=1e-7):
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    return abs(a - b) <= tol


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("collection,value", [("trees", "height_m"), ("crowns", "area_m2"), ("plots", "zmean_m"),
                                              ("scans", "crs_epsg")])
def test_gdal_opens_every_format(server, world, tmp_path, fmt, collection, value):
    params = {"project_id": world["pub"]}
    path = _download(server, collection, fmt, tmp_path, **params)
    info = subprocess.run(["ogrinfo", "-ro", "-so", "-al", _gdal_path(path)], capture_output=True, text=True,
                          timeout=60)
    assert info.returncode == 0, info.stderr
    expected = _items(server, collection, **params)
    assert len(expected) == {"trees": 25, "crowns": 25, "plots": 3, "scans": 1}[collection]
    assert int(re.search(r"Feature Count: (\d+)", info.stdout).group(1)) == len(expected)
    got = {f["properties"]["id"]: f for f in _ogr_features(path, csv_points=fmt == "csv" and collection == "trees")}
    assert sorted(got) == sorted(f["id"] for f in expected)
    for want in expected:
        have = got[want["id"]]
        wanted = want["properties"][value] if value != "zmean_m" else want["properties"]["metrics"]["zmean"]
        assert _close(have["properties"][value], wanted, 1e-5), (have["properties"], want["properties"])
        if collection == "trees":
            assert _close(have["geometry"]["coordinates"], want["geometry"]["coordinates"])
        else:    # the polygons' rings: same vertices (a ring's orientation may differ per format)
            ring = lambda g: g["coordinates"][0][0] if g["type"] == "MultiPolygon" else g["coordinates"][0]
            mine, theirs = ring(have["geometry"]), ring(want["geometry"])
            assert len(mine) == len(theirs)
            assert all(any(_close(v, w, 1e-7) for w in mine) for v in theirs)   # GeoJSON has 7 digits


def test_trees_csv_native_and_geographic_coordinates(server, world, db_url, tmp_path):
    path = _download(server, "trees", "csv", tmp_path, scan_id=world["scan"])
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    header = list(rows[0])
    assert len(header) == len(set(header))
    assert {"x", "y", "crs_epsg", "lon", "lat", "height_m", "crown_area_m2", "scan_id"} <= set(header)
    with psycopg.connect(db_url) as conn:
        truth = {r[0]: r[1:] for r in conn.execute(
            "SELECT id, x, y, ST_X(geom), ST_Y(geom) FROM trees WHERE scan_id = %s", (world["scan"],))}
    assert sorted(int(r["id"]) for r in rows) == sorted(truth)
    for r in rows:
        x, y, lon, lat = truth[int(r["id"])]
        assert float(r["x"]) == pytest.approx(x, abs=1e-6) and float(r["y"]) == pytest.approx(y, abs=1e-6)
        assert abs(float(r["x"]) - float(r["lon"])) > 1000      # projected, never overwritten by lon/lat
        assert float(r["lon"]) == pytest.approx(lon, abs=1e-9) and float(r["lat"]) == pytest.approx(lat, abs=1e-9)
        assert int(r["crs_epsg"]) == EPSG


def test_plots_csv_one_column_per_metric(server, world, tmp_path):
    path = _download(server, "plots", "csv", tmp_path, project_id=world["pub"])
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    header = list(rows[0])
    assert {"zmean_m", "zq95_m", "cover_pct", "zskew", "n_count", "stand", "age", "lon", "lat", "WKT"} <= set(header)
    assert "metrics" not in header and "attributes" not in header
    by_name = {r["name"]: r for r in rows}
    for i in range(3):
        r = by_name[f"plot {i}"]
        assert float(r["zmean_m"]) == METRICS["zmean"] + i and float(r["cover_pct"]) == METRICS["cover"] + i
        assert float(r["n_count"]) == METRICS["n"] + i and r["stand"] == f"S{i}" and float(r["age"]) == 40 + i
        assert r["WKT"].startswith("MULTIPOLYGON")
    # the metrics are columns in the GIS formats too
    gpkg = _download(server, "plots", "gpkg", tmp_path, project_id=world["pub"])
    props = {f["properties"]["name"]: f["properties"] for f in _ogr_features(gpkg)}
    assert props["plot 2"]["zq95_m"] == METRICS["zq95"] + 2 and props["plot 2"]["stand"] == "S2"


def test_private_project_export_follows_access(server, world, tmp_path):
    params = {"project_id": world["priv"]}
    for who, headers, n in (("member", world["member"], 2), ("outsider", world["outsider"], 0),
                            ("anonymous", None, 0)):
        assert len(_items(server, "trees", headers=headers, **params)) == n
        (tmp_path / who).mkdir()
        path = _download(server, "trees", "csv", tmp_path / who, headers=headers, **params)
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        assert sorted(int(r["id"]) for r in rows) == (sorted(world["priv_trees"]) if n else []), who
        gpkg = _download(server, "trees", "gpkg", tmp_path / who, headers=headers, **params)
        info = subprocess.run(["ogrinfo", "-ro", "-so", "-al", str(gpkg)], capture_output=True, text=True)
        assert int(re.search(r"Feature Count: (\d+)", info.stdout).group(1)) == n, who


def test_filters_apply(server, world, tmp_path):
    base = {"project_id": world["pub"]}
    for params in ({"filter": "height_m > 20"}, {"filter": '{"op": "<", "args": [{"property": "height_m"}, 15]}',
                                                 "filter-lang": "cql2-json"},
                   {"bbox": ",".join(map(str, _bbox_of_first_trees(server, world)))}, {"sortby": "-height_m"}):
        want = [f["id"] for f in _items(server, "trees", **base, **params)]
        assert 0 < len(want) < 25 or "sortby" in params, params
        path = _download(server, "trees", "csv", tmp_path, **base, **params)
        got = [int(r["id"]) for r in csv.DictReader(io.StringIO(path.read_text()))]
        assert got == want if "sortby" in params else sorted(got) == sorted(want), params
    bad = requests.get(f"{server}/collections/trees/items", params={"f": "gpkg", "filter": "height_m >"})
    assert bad.status_code == 400
    # a value the database refuses at the COPY's start (schemathesis found it as a 500)
    for fmt in ("csv", "gpkg"):
        bad = requests.get(f"{server}/collections/rasters/items", params={"f": fmt, "bands": "[{'x'}]"})
        assert bad.status_code == 400 and "not have the property's type" in bad.json()["detail"], bad.text
    # plots (whose metric columns are read before the COPY) answer as their JSON pages do
    for fmt in ("csv", "gpkg", "shp", "fgb", "json"):
        bad = requests.get(f"{server}/collections/plots/items", params={"f": fmt, "created_at": "2020-13-45"})
        assert bad.status_code == 400 and "date or time" in bad.text, (fmt, bad.text)


def _bbox_of_first_trees(server, world) -> list[float]:
    pts = [f["geometry"]["coordinates"] for f in _items(server, "trees", project_id=world["pub"])][:5]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [min(xs) - 1e-7, min(ys) - 1e-7, max(xs) + 1e-7, max(ys) + 1e-7]


def test_content_negotiation_and_names(server, world):
    url = f"{server}/collections/trees/items"
    for accept, media, name in (("application/geopackage+sqlite3", "application/geopackage+sqlite3", "trees.gpkg"),
                                ("application/flatgeobuf", "application/flatgeobuf", "trees.fgb"),
                                ("application/x-shapefile", "application/zip", "trees.zip"),
                                ("text/csv", "text/csv", "trees.csv")):
        r = requests.get(url, params={"project_id": world["pub"]}, headers={"Accept": accept})
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(media), accept
        assert r.headers["Content-Disposition"] == f"attachment; filename={name}"
    shp = requests.get(url, params={"project_id": world["pub"], "f": "shp"})
    assert sorted(Path(n).suffix for n in zipfile.ZipFile(io.BytesIO(shp.content)).namelist()) == \
        [".cpg", ".dbf", ".prj", ".shp", ".shx"]
    # JSON stays the default
    for accept in ("*/*", "application/geo+json", "application/json, text/csv;q=0.5"):
        r = requests.get(url, params={"limit": 1}, headers={"Accept": accept})
        assert r.status_code == 200 and "json" in r.headers["Content-Type"], accept
    assert requests.get(url, params={"f": "xlsx"}).status_code == 400


def test_export_is_not_one_page(server, db_url, world, tmp_path):
    """More rows than the page cap (CANOPY_LIMIT_MAX, 10000) all come out."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = conn.execute("INSERT INTO projects (name, visibility) VALUES ('big', 'public') RETURNING id").fetchone()[0]
        sid = conn.execute("INSERT INTO scans (project_id, name, status, crs_epsg) VALUES (%s, 'big', 'ready', %s) "
                           "RETURNING id", (pid, EPSG)).fetchone()[0]
        conn.execute("INSERT INTO trees (scan_id, project_id, x, y, geom, height_m) SELECT %s, %s, i, i, "
                     "ST_SetSRID(ST_MakePoint(-120 + i * 1e-6, 45), 4326), 20 FROM generate_series(1, 10050) i",
                     (sid, pid))
    path = _download(server, "trees", "fgb", tmp_path, scan_id=sid)
    info = subprocess.run(["ogrinfo", "-ro", "-so", "-al", str(path)], capture_output=True, text=True)
    assert int(re.search(r"Feature Count: (\d+)", info.stdout).group(1)) == 10050
    small = _download(server, "trees", "csv", tmp_path, scan_id=sid, limit=7)
    assert len(list(csv.DictReader(io.StringIO(small.read_text())))) == 7


def test_openapi_declares_formats(server):
    doc = requests.get(f"{server}/openapi", params={"f": "json"}).json()
    op = doc["paths"]["/collections/trees/items"]["get"]
    assert {"$ref": "#/components/parameters/f-items"} in op["parameters"]
    enum = doc["components"]["parameters"]["f-items"]["schema"]["enum"]
    assert {"json", "gpkg", "shp", "fgb", "csv"} <= set(enum)
    content = doc["components"]["responses"]["FeaturesOrExport"]["content"]
    assert {"application/geo+json", "application/geopackage+sqlite3", "application/zip",
            "application/flatgeobuf", "text/csv"} <= set(content)
    assert op["responses"]["200"] == {"$ref": "#/components/responses/FeaturesOrExport"}
    assert "application/zip" in doc["paths"]["/scans/{scanId}/runs/{runId}/export"]["get"]["responses"]["200"]["content"]


def test_run_zip(server, db_url, world, tmp_path):
    """A run's zip: every product, a manifest whose checksums match, files GDAL opens."""
    import hashlib

    import numpy as np
    import rasterio
    from affine import Affine

    tif = tmp_path / "chm.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32", crs=f"EPSG:{EPSG}",
                       transform=Affine(1, 0, X0, 0, -1, Y0 + 4)) as ds:
        ds.write(np.arange(16, dtype="float32").reshape(1, 4, 4))
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = conn.execute("INSERT INTO projects (name, visibility) VALUES ('runs', 'private') RETURNING id").fetchone()[0]
        sid = conn.execute("INSERT INTO scans (project_id, name, status, crs_epsg, crs_wkt) VALUES (%s, 'r', 'ready', "
                           "%s, 'WKT of UTM 10N') RETURNING id", (pid, EPSG)).fetchone()[0]
        for run in ("run-a", "run-b"):
            conn.execute("INSERT INTO runs (id, scan_id, project_id, process_id, parameters, engine_version, products) "
                         "VALUES (%s, %s, %s, 'forest-inventory', %s, 'engine 9.9', '{trees,chm}')",
                         (run, sid, pid, json.dumps({"scan": sid, "trees": {"ws": 4}})))
            conn.execute("INSERT INTO trees (scan_id, project_id, x, y, geom, height_m, run_id) SELECT %s, %s, "
                         "%s + i, %s, ST_Transform(ST_SetSRID(ST_MakePoint(%s + i, %s), %s), 4326), 10 + i, %s "
                         "FROM generate_series(1, %s) i", (sid, pid, X0, Y0, X0, Y0, EPSG, run,
                                                           4 if run == "run-a" else 6))
        conn.execute("INSERT INTO crowns (tree_id, scan_id, project_id, geom, area_m2, run_id) SELECT id, scan_id, "
                     "project_id, ST_Buffer(geom, 0.00001), 3, run_id FROM trees WHERE scan_id = %s", (sid,))
        plot = conn.execute("INSERT INTO plots (project_id, name, geom, metrics) VALUES (%s, 'p', ST_Multi("
                            "ST_Transform(ST_MakeEnvelope(%s, %s, %s, %s, %s), 4326)), '{\"zmean\": 99}') RETURNING id",
                            (pid, X0, Y0, X0 + 10, Y0 + 10, EPSG)).fetchone()[0]
        conn.execute("INSERT INTO plot_metrics (run_id, plot_id, metrics) VALUES ('run-a', %s, '{\"zmean\": 7.5}')",
                     (plot,))
        conn.execute("INSERT INTO rasters (project_id, scan_id, kind, storage_uri, crs_epsg, run_id) VALUES "
                     "(%s, %s, 'chm', %s, %s, 'run-a')", (pid, sid, tif.as_uri(), EPSG))
    owner = {"Authorization": f"Bearer {_owner_token(server, db_url, pid)}"}
    url = f"{server}/scans/{sid}/runs/run-a/export"
    r = requests.get(url, headers=owner)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"] == f"attachment; filename=scan-{sid}-run-run-a.zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = sorted(zf.namelist())
    assert names == sorted(["manifest.json", "trees.gpkg", "trees.csv", "crowns.gpkg", "plots.gpkg", "plots.csv",
                            names[[n.startswith("chm-") for n in names].index(True)]])
    man = json.loads(zf.read("manifest.json"))
    assert man["run"] == "run-a" and man["engine_version"] == "engine 9.9"
    assert man["parameters"]["trees"] == {"ws": 4} and man["crs"]["native_epsg"] == EPSG
    for entry in man["files"]:
        assert hashlib.sha256(zf.read(entry["name"])).hexdigest() == entry["sha256"]
        assert len(zf.read(entry["name"])) == entry["bytes"]
    zf.extractall(tmp_path / "run")
    trees = list(csv.DictReader(io.StringIO((tmp_path / "run" / "trees.csv").read_text())))
    assert len(trees) == 4 and {r["run_id"] for r in trees} == {"run-a"}
    crowns = _ogr_features(tmp_path / "run" / "crowns.gpkg")
    assert len(crowns) == 4
    plots = list(csv.DictReader(io.StringIO((tmp_path / "run" / "plots.csv").read_text())))
    assert [float(p["zmean_m"]) for p in plots] == [7.5]           # that run's metrics, not the latest
    assert (tmp_path / "run" / names[[n.startswith("chm-") for n in names].index(True)]).read_bytes() == tif.read_bytes()
    # another user: as missing; an unknown run too
    assert requests.get(url, headers=world["outsider"]).status_code == 404
    assert requests.get(url).status_code == 404
    assert requests.get(f"{server}/scans/{sid}/runs/nope/export", headers=owner).status_code == 404


def _owner_token(server, db_url, project_id) -> str:
    from argon2 import PasswordHasher

    from tests.conftest import PASSWORD
    with psycopg.connect(db_url, autocommit=True) as conn:
        uid = conn.execute("INSERT INTO users (username, password_hash) VALUES ('run-owner', %s) RETURNING id",
                           (PasswordHasher().hash(PASSWORD),)).fetchone()[0]
        conn.execute("INSERT INTO project_members VALUES (%s, %s, 'owner')", (project_id, uid))
    r = requests.post(f"{server}/auth/token", json={"username": "run-owner", "password": PASSWORD},
                      headers={"X-Forwarded-For": "10.9.9.9"})
    return r.json()["access_token"]
