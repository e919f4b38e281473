"""Real clients against the real server: GDAL's OAPIF driver and OWSLib."""

from __future__ import annotations

import json
import shutil
import subprocess

import psycopg
import pytest
from owslib.ogcapi.features import Features


@pytest.fixture(scope="module")
def clients_project(db_url):
    """A public project with 37 plots in a known extent (lon 20..20.36, lat 40..40.036)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = conn.execute("INSERT INTO projects (name, visibility) VALUES ('clients', 'public') "
                           "RETURNING id").fetchone()[0]
        conn.execute("""INSERT INTO plots (project_id, name, geom, attributes)
                        SELECT %s, 'client plot ' || i,
                               ST_Multi(ST_MakeEnvelope(20 + i * 0.01, 40 + i * 0.001,
                                                        20 + i * 0.01 + 0.005, 40 + i * 0.001 + 0.005, 4326)),
                               jsonb_build_object('i', i)
                        FROM generate_series(0, 36) AS i""", (pid,))
    return pid


@pytest.mark.skipif(not shutil.which("ogrinfo"), reason="GDAL's ogrinfo is not installed")
def test_gdal_oapif_lists_collections_and_reads_plots(server, clients_project):
    out = subprocess.run(["ogrinfo", "-ro", "-q", f"OAPIF:{server}"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("plots", "scans", "trees", "crowns", "rasters"):
        assert name in out.stdout
    # the layer filtered on the server to this project: count and extent must match the data
    out = subprocess.run(["ogrinfo", "-ro", "-so", "-oo", "PAGE_SIZE=10", f"OAPIF:{server}", "plots",
                          "-where", f"project_id = {clients_project}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Feature Count: 37" in out.stdout, out.stdout
    out = subprocess.run(["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", "-oo", "PAGE_SIZE=10", f"OAPIF:{server}",
                          "plots", "-where", f"project_id = {clients_project}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    features = json.loads(out.stdout)["features"]
    assert len(features) == 37                       # walked 4 pages of 10 via next links
    xs = [c[0] for f in features for c in f["geometry"]["coordinates"][0][0]]
    ys = [c[1] for f in features for c in f["geometry"]["coordinates"][0][0]]
    assert min(xs) == pytest.approx(20.0) and max(xs) == pytest.approx(20.365)
    assert min(ys) == pytest.approx(40.0) and max(ys) == pytest.approx(40.041)


@pytest.mark.skipif(not shutil.which("ogrinfo"), reason="GDAL's ogrinfo is not installed")
def test_gdal_spatial_filter_is_sent_as_bbox(server, clients_project):
    out = subprocess.run(["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", f"OAPIF:{server}", "plots",
                          "-spat", "20.097", "40.0", "20.125", "40.05",
                          "-where", f"project_id = {clients_project}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = sorted(f["properties"]["name"] for f in json.loads(out.stdout)["features"])
    assert names == ["client plot 10", "client plot 11", "client plot 12"]


def test_owslib_reads_items_with_bbox_and_limit(server, clients_project):
    api = Features(server)
    assert "plots" in [c["id"] for c in api.collections()["collections"]]
    page = api.collection_items("plots", bbox=[20.0, 40.0, 20.198, 40.05], limit=5,
                                project_id=clients_project)
    assert page["numberReturned"] == 5
    assert page["numberMatched"] == 20                # plots 0..19 start west of lon 20.2
    assert [f["properties"]["name"] for f in page["features"]] == [f"client plot {i}" for i in range(5)]
    queryables = api.collection_queryables("plots")
    assert {"name", "project_id"} <= set(queryables["properties"])


@pytest.mark.skipif(not shutil.which("ogrinfo"), reason="GDAL's ogrinfo is not installed")
def test_gdal_reads_a_private_collection_with_a_bearer_token(server, db_url, make_user):
    """GDAL with GDAL_HTTP_HEADERS sees a private project's plots only with a member's token."""
    import os
    with psycopg.connect(db_url, autocommit=True) as conn:
        private = conn.execute("INSERT INTO projects (name, visibility) VALUES ('gdal private', 'private') "
                               "RETURNING id").fetchone()[0]
        conn.execute("""INSERT INTO plots (project_id, name, geom)
                        SELECT %s, 'secret ' || i, ST_Multi(ST_MakeEnvelope(-60 + i * 0.01, -30, -60 + i * 0.01 + 0.005,
                                                                            -29.995, 4326))
                        FROM generate_series(1, 12) AS i""", (private,))
    member = make_user("viewer", {private: "viewer"})
    outsider = make_user("viewer")

    def count(token: str | None) -> str:
        env = dict(os.environ)
        if token:
            env["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {token}"
        out = subprocess.run(["ogrinfo", "-ro", "-so", f"OAPIF:{server}", "plots", "-where",
                              f"project_id = {private}"], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        return next(line for line in out.stdout.splitlines() if line.startswith("Feature Count"))

    assert count(member.token) == "Feature Count: 12"
    assert count(outsider.token) == "Feature Count: 0"
    assert count(None) == "Feature Count: 0"
