"""The printable report of a scan (GET /scans/{id}/report): a synthetic scan is ingested and
inventoried by a real worker, then its report must agree with the trees table (count and
stems per hectare over the footprint), draw every tree in its height histogram, show the
plot metrics with units, and serve its CHM and DTM quicklooks as PNG images."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import psycopg
import pytest
import requests
from PIL import Image
from pyproj import Transformer

from processes.lidar.synthetic import make_forest
from tests.integration.test_lidar_processes import _run, _scan


@pytest.fixture(scope="module")
def processed(server, services, db_url, make_user):
    """A public project's scan (100 m of open forest) with one plot, ingested and inventoried."""
    from tests.conftest import Workers
    from pathlib import Path

    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name, visibility) VALUES ('report', 'public') "
                               "RETURNING id").fetchone()[0]
    headers = {"Authorization": f"Bearer {make_user('analyst', {project: 'editor'}).token}"}
    points, _ = make_forest("open", size=100, seed=5, density=8, shrubs=0.01)
    scan_id = _scan(server, db_url, project, points, name="report.laz")
    to_ll = Transformer.from_crs(32610, 4326, always_xy=True)
    cx, cy = points.x.min() + 50, points.y.min() + 50
    ring = [list(to_ll.transform(cx + dx, cy + dy)) for dx, dy in ((-12, -12), (12, -12), (12, 12), (-12, 12),
                                                                  (-12, -12))]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, 'report plot', "
                     "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326))",
                     (project, json.dumps({"type": "MultiPolygon", "coordinates": [[ring]]})))
    workers = Workers(services, Path(server.log).parent)
    workers.start(1)
    try:
        assert _run(server, headers, "ingest-scan", {"scan": scan_id})["status"] == "successful"
        job = _run(server, headers, "forest-inventory", {"scan": scan_id}, timeout=400)
        assert job["status"] == "successful", job
    finally:
        workers.stop_all()
    return {"scan": scan_id, "project": project, "headers": headers}


def _figure(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert found, f"no #{element_id} in the report"
    return found.group(1)


def test_report_agrees_with_the_trees_table(server, db_url, processed):
    scan_id = processed["scan"]
    r = requests.get(f"{server}/scans/{scan_id}/report", timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    html = r.text
    with psycopg.connect(db_url) as conn:
        trees, = conn.execute("SELECT count(*) FROM trees t JOIN scans s ON s.id = t.scan_id "
                              "WHERE t.scan_id = %s AND t.run_id = s.current_run_id", (scan_id,)).fetchone()
        area_m2, points, density = conn.execute("SELECT ST_Area(footprint::geography), point_count, density_pts_m2 "
                                                "FROM scans WHERE id = %s", (scan_id,)).fetchone()
    assert trees > 20
    assert _figure(html, "tree-count") == f"{trees:,}"
    assert _figure(html, "stems-per-ha") == f"{trees / (area_m2 / 10_000):.0f}"
    assert _figure(html, "points") == f"{points:,}"
    assert _figure(html, "density") == f"{density:.1f}"
    assert _figure(html, "area") == f"{area_m2 / 10_000:.2f}"
    ground = float(_figure(html, "ground-share"))
    cover = float(_figure(html, "canopy-cover"))
    assert 5 < ground < 95 and 5 < cover < 100

    # the height histogram draws every tree once: its bars' counts add up to the tree count
    heights_svg = html.split('aria-label="Tree heights"', 1)[1].split("</svg>", 1)[0]
    bars = [int(n) for n in re.findall(r"<title>[\d.]+: (\d+)</title>", heights_svg)]
    assert sum(bars) == trees
    crowns_svg = html.split('aria-label="Crown diameters"', 1)[1].split("</svg>", 1)[0]
    assert sum(int(n) for n in re.findall(r"<title>[\d.]+: (\d+)</title>", crowns_svg)) > 0

    # plot metrics with units and definitions, rounded; the leaf area profile as a chart
    table = html.split('id="plot-metrics"', 1)[1].split("</table>", 1)[0]
    zmax = re.search(r"<code>zmax</code></td><td>m</td><td>([\d.,]+)</td><td class=\"def\">([^<]+)<", table)
    assert zmax and re.fullmatch(r"\d+\.\d", zmax.group(1)) and "Highest return" in zmax.group(2)
    assert re.search(r"<code>cover</code></td><td>%</td><td>\d+\.\d</td>", table)
    assert 'aria-label="report plot"' in html            # its leaf area density profile
    assert "https://" not in html.split("<body>", 1)[0]  # nothing loaded from elsewhere


@pytest.mark.parametrize("kind", ["chm", "dtm"])
def test_quicklooks_are_png_pictures_of_the_rasters(server, processed, kind):
    r = requests.get(f"{server}/scans/{processed['scan']}/report/{kind}.png", timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))
    assert 100 <= max(image.shape[:2]) <= 512
    opaque = image[..., 3] > 0
    assert opaque.mean() > 0.8                                  # the raster covers the scan
    assert len(np.unique(image[opaque][:, :3], axis=0)) > 50     # a picture, not a flat colour
    assert f"/scans/{processed['scan']}/report/{kind}.png" in requests.get(
        f"{server}/scans/{processed['scan']}/report", timeout=60).text


def test_scan_feature_links_its_report(server, processed):
    scan_id = processed["scan"]
    item = requests.get(f"{server}/collections/scans/items/{scan_id}", params={"f": "json"}, timeout=30).json()
    links = [l for l in item["links"] if l.get("title") == "Printable report"]
    assert links == [{"rel": "describedby", "type": "text/html", "title": "Printable report",
                      "href": f"{server}/scans/{scan_id}/report"}]
    page = requests.get(f"{server}/collections/scans/items", params={"f": "json", "limit": 1000}, timeout=30).json()
    mine = [f for f in page["features"] if str(f["id"]) == str(scan_id)]
    assert mine and mine[0]["links"][-1]["href"] == f"{server}/scans/{scan_id}/report"


def test_report_follows_the_scan_access_policy(server, db_url, make_user):
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name, visibility) VALUES ('private report', 'private') "
                               "RETURNING id").fetchone()[0]
        scan = conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, 'hidden', 'uploaded') "
                            "RETURNING id", (project,)).fetchone()[0]
    assert requests.get(f"{server}/scans/{scan}/report", timeout=30).status_code == 404
    assert requests.get(f"{server}/scans/{scan}/report/chm.png", timeout=30).status_code == 404
    member = {"Authorization": f"Bearer {make_user('viewer', {project: 'viewer'}).token}"}
    r = requests.get(f"{server}/scans/{scan}/report", headers=member, timeout=30)
    assert r.status_code == 200 and _figure(r.text, "tree-count") == "0"
    r = requests.get(f"{server}/scans/{scan}/report/chm.png", headers=member, timeout=30)
    assert r.status_code == 404 and "no CHM yet" in r.json()["detail"]
    assert requests.get(f"{server}/scans/{scan + 10_000}/report", timeout=30).status_code == 404
