"""OGC API - Features against the real server, PostGIS and data with known answers."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import psycopg
import pyproj
import pytest
import requests

N_SIDE = 50          # 50 x 50 = 2,500 plots
CELL = 0.01          # degrees between plot centres
HALF = 0.002         # half-width of a plot square, degrees
LON0, LAT0 = 10.0, 50.0


def _square(lon: float, lat: float) -> dict:
    ring = [[lon - HALF, lat - HALF], [lon + HALF, lat - HALF], [lon + HALF, lat + HALF],
            [lon - HALF, lat + HALF], [lon - HALF, lat - HALF]]
    return {"type": "MultiPolygon", "coordinates": [[ring]]}


def _centre(row: int, col: int) -> tuple[float, float]:
    return LON0 + col * CELL + CELL / 2, LAT0 + row * CELL + CELL / 2


@pytest.fixture(scope="module")
def grid(db_url, project):
    """2,500 plots on a regular grid; returns {id: (row, col)}."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO plots (project_id, name, geom, attributes)
               SELECT %(p)s, format('plot %%s', lpad(i::text, 4, '0')),
                      ST_Multi(ST_Expand(ST_SetSRID(ST_MakePoint(%(lon0)s + (i %% %(n)s) * %(cell)s + %(cell)s / 2,
                                                                 %(lat0)s + (i / %(n)s) * %(cell)s + %(cell)s / 2), 4326), %(half)s)),
                      jsonb_build_object('row', i / %(n)s, 'col', i %% %(n)s)
               FROM generate_series(0, %(n)s * %(n)s - 1) AS i""",
            {"p": project, "n": N_SIDE, "cell": CELL, "half": HALF, "lon0": LON0, "lat0": LAT0})
        rows = conn.execute("SELECT id, (attributes->>'row')::int, (attributes->>'col')::int "
                            "FROM plots WHERE project_id = %s", (project,)).fetchall()
        conn.execute("ANALYZE plots")
    return {r[0]: (r[1], r[2]) for r in rows}


def _walk(url: str, rel: str = "next") -> list[dict]:
    pages = []
    while url:
        r = requests.get(url, timeout=10)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        url = next((l["href"] for l in page["links"] if l["rel"] == rel), None)
        assert len(pages) < 1000
    return pages


def test_walking_next_yields_every_feature_exactly_once(server, grid, project):
    pages = _walk(f"{server}/collections/plots/items?limit=100&project_id={project}")
    ids = [f["id"] for p in pages for f in p["features"]]
    assert len(pages) == 25
    assert len(ids) == len(set(ids)) == 2500
    assert set(ids) == set(grid)
    assert all(p["numberReturned"] == 100 for p in pages)
    # the last page's prev links walk back over the same features, in the same order
    last = pages[-1]
    prev_url = next(l["href"] for l in last["links"] if l["rel"] == "prev")
    back = _walk(prev_url, rel="prev")
    back_ids = [f["id"] for p in reversed(back) for f in p["features"]]
    assert back_ids == ids[:-100]
    assert not any(l["rel"] == "next" for l in last["links"])


def test_walking_a_sorted_collection(server, grid, project):
    pages = _walk(f"{server}/collections/plots/items?limit=300&project_id={project}&sortby=-name")
    names = [f["properties"]["name"] for p in pages for f in p["features"]]
    assert len(names) == 2500 == len(set(names))
    assert names == sorted(names, reverse=True)
    assert names[0] == "plot 2499"


def test_offset_paging_still_works(server, grid, project):
    page = requests.get(f"{server}/collections/plots/items?limit=10&offset=2495&project_id={project}").json()
    assert [f["properties"]["name"] for f in page["features"]] == [f"plot {i}" for i in range(2495, 2500)]


def test_number_matched_is_exact(server, grid, project):
    page = requests.get(f"{server}/collections/plots/items?limit=5&project_id={project}").json()
    assert page["numberMatched"] == 2500 and page["numberReturned"] == 5


@pytest.fixture(scope="module")
def low_cap_server(services, tmp_path_factory):
    """A server counting exactly only up to 1,000 matches (CANOPY_COUNT_CAP)."""
    from tests.conftest import running_server
    with running_server(services, tmp_path_factory.mktemp("cap"), CANOPY_COUNT_CAP="1000") as base:
        yield base


def test_number_matched_is_never_left_out_above_the_cap(low_cap_server, grid, project):
    """QGIS 3.22 reads the feature count from the first page's numberMatched (0 without it):
    above the cap it is the planner's estimate, never below the cap."""
    items = f"{low_cap_server}/collections/plots/items"
    for params in ({"limit": 10, "project_id": project}, {"limit": 10, "project_id": project, "resulttype": "hits"},
                   {"limit": 10, "project_id": project, "offset": 100}):
        page = requests.get(items, params=params).json()
        assert 1000 < page["numberMatched"] and abs(page["numberMatched"] - 2500) <= 250, (params, page["numberMatched"])
    bbox = f"{LON0},{LAT0},{LON0 + 10 * CELL},{LAT0 + 10 * CELL}"          # 100 plots: exact under the cap
    assert requests.get(items, params={"bbox": bbox, "limit": 5, "project_id": project}).json()["numberMatched"] == 100


def test_bbox_returns_exactly_the_plots_inside(server, grid, project):
    # rows 0-9 and cols 0-9 intersect this box; the 11th row/col starts beyond it
    bbox = f"{LON0},{LAT0},{LON0 + 10 * CELL},{LAT0 + 10 * CELL}"
    page = requests.get(f"{server}/collections/plots/items?bbox={bbox}&limit=1000&project_id={project}").json()
    got = {grid[f["id"]] for f in page["features"]}
    assert got == {(r, c) for r in range(10) for c in range(10)}
    assert page["numberMatched"] == 100


def test_bbox_crs_3857(server, grid, project):
    to3857 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = to3857.transform(LON0, LAT0)
    x1, y1 = to3857.transform(LON0 + 3 * CELL, LAT0 + 2 * CELL)
    r = requests.get(f"{server}/collections/plots/items", params={
        "bbox": f"{x0},{y0},{x1},{y1}", "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/3857",
        "project_id": project, "limit": 100})
    assert r.status_code == 200, r.text
    assert {grid[f["id"]] for f in r.json()["features"]} == {(r_, c) for r_ in range(2) for c in range(3)}


def test_cql2_text(server, grid, project):
    lon, lat = _centre(7, 11)
    cases = {
        "name = 'plot 0042'": {(0, 42)},
        "name LIKE 'plot 000%'": {(0, c) for c in range(10)},
        f"S_INTERSECTS(geom, POINT({lon} {lat}))": {(7, 11)},
        "name IN ('plot 0001', 'plot 0051') AND NOT name = 'plot 0051'": {(0, 1)},
        "name BETWEEN 'plot 0100' AND 'plot 0102'": {(2, 0), (2, 1), (2, 2)},
        "CASEI(name) = casei('PLOT 0003')": {(0, 3)},
    }
    for expr, expected in cases.items():
        r = requests.get(f"{server}/collections/plots/items",
                         params={"filter": expr, "filter-lang": "cql2-text", "project_id": project,
                                 "limit": 100})
        assert r.status_code == 200, (expr, r.text)
        assert {grid[f["id"]] for f in r.json()["features"]} == expected, expr


def test_cql2_json_in_query_and_body(server, grid, project):
    filt = {"op": "and", "args": [
        {"op": "=", "args": [{"property": "project_id"}, project]},
        {"op": "s_intersects", "args": [{"property": "geom"}, {
            "type": "Polygon", "coordinates": [[[LON0, LAT0], [LON0 + 2 * CELL, LAT0], [LON0 + 2 * CELL, LAT0 + CELL],
                                                [LON0, LAT0 + CELL], [LON0, LAT0]]]}]}]}
    r = requests.get(f"{server}/collections/plots/items",
                     params={"filter": json.dumps(filt), "filter-lang": "cql2-json"})
    assert r.status_code == 200, r.text
    assert {grid[f["id"]] for f in r.json()["features"]} == {(0, 0), (0, 1)}
    r = requests.post(f"{server}/collections/plots/items?limit=50", data=json.dumps(filt),
                      headers={"Content-Type": "application/query-cql-json"})
    assert r.status_code == 200, r.text
    assert {grid[f["id"]] for f in r.json()["features"]} == {(0, 0), (0, 1)}


def test_filter_crs(server, grid, project):
    lon, lat = _centre(3, 4)
    x, y = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)
    r = requests.get(f"{server}/collections/plots/items", params={
        "filter": f"S_INTERSECTS(geom, POINT({x} {y}))", "project_id": project,
        "filter-crs": "http://www.opengis.net/def/crs/EPSG/0/3857"})
    assert r.status_code == 200, r.text
    assert [grid[f["id"]] for f in r.json()["features"]] == [(3, 4)]


def test_output_crs(server, grid, project):
    plot_id = next(i for i, rc in grid.items() if rc == (5, 6))
    lon, lat = _centre(5, 6)
    r = requests.get(f"{server}/collections/plots/items/{plot_id}",
                     params={"crs": "http://www.opengis.net/def/crs/EPSG/0/3857"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Crs"] == "<http://www.opengis.net/def/crs/EPSG/0/3857>"
    ring = r.json()["geometry"]["coordinates"][0][0]
    x, y = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(lon - HALF, lat - HALF)
    assert ring[0] == pytest.approx([x, y], abs=0.01)
    r = requests.get(f"{server}/collections/plots/items/{plot_id}",
                     params={"crs": "http://www.opengis.net/def/crs/EPSG/0/4326"})
    assert r.json()["geometry"]["coordinates"][0][0][0] == pytest.approx([lat - HALF, lon - HALF], abs=1e-7)
    r = requests.get(f"{server}/collections/plots/items/{plot_id}")
    assert r.json()["geometry"]["coordinates"][0][0][0] == pytest.approx([lon - HALF, lat - HALF], abs=1e-7)


def test_properties_and_skip_geometry(server, grid, project):
    r = requests.get(f"{server}/collections/plots/items", params={
        "project_id": project, "limit": 3, "properties": "name", "skipGeometry": "true"})
    feats = r.json()["features"]
    assert [set(f["properties"]) for f in feats] == [{"name"}] * 3
    assert all(f["geometry"] is None for f in feats)


def test_datetime_filter(server, db, project):
    other = db.execute("INSERT INTO projects (name, visibility) VALUES ('dt', 'public') RETURNING id").fetchone()[0]
    for day in (1, 10, 20):
        db.execute("INSERT INTO plots (project_id, name, geom, updated_at) VALUES (%s, %s, "
                   "ST_Multi(ST_Expand(ST_SetSRID(ST_MakePoint(1, 1), 4326), 0.001)), %s)",
                   (other, f"d{day}", f"2024-03-{day:02d}T12:00:00Z"))
    r = requests.get(f"{server}/collections/plots/items", params={
        "project_id": other, "datetime": "2024-03-05T00:00:00Z/2024-03-15T00:00:00Z"})
    assert [f["properties"]["name"] for f in r.json()["features"]] == ["d10"]
    r = requests.get(f"{server}/collections/plots/items", params={
        "project_id": other, "datetime": "2024-03-05T00:00:00Z/.."})
    assert sorted(f["properties"]["name"] for f in r.json()["features"]) == ["d10", "d20"]


# -- Part 4: create, replace, update, delete with ETag / If-Match ---------------------------

def _feature(project_id: int, name: str, lon: float = 5.0, lat: float = 5.0) -> dict:
    return {"type": "Feature", "geometry": _square(lon, lat)["coordinates"][0] and
            {"type": "Polygon", "coordinates": _square(lon, lat)["coordinates"][0]},
            "properties": {"project_id": project_id, "name": name, "attributes": {"k": 1}}}


@pytest.fixture(scope="module")
def editor(make_user, project):
    return {"Authorization": f"Bearer {make_user('viewer', {project: 'editor'}).token}"}


def test_create_replace_patch_delete_with_etags(server, project, editor):
    items = f"{server}/collections/plots/items"
    r = requests.post(items, json=_feature(project, "new"),
                      headers={"Content-Type": "application/geo+json", **editor})
    assert r.status_code == 201, r.text
    url = r.headers["Location"]
    r = requests.get(url)
    assert r.status_code == 200 and r.headers["ETag"] == '"1"'
    assert r.json()["properties"]["name"] == "new"

    assert requests.put(url, json=_feature(project, "x"),
                        headers={"Content-Type": "application/geo+json", **editor}).status_code == 428
    r = requests.put(url, json=_feature(project, "replaced"),
                     headers={"Content-Type": "application/geo+json", "If-Match": '"1"', **editor})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"2"' and r.headers["Content-Type"] == "application/geo+json"
    assert r.json()["properties"]["name"] == "replaced" and r.json()["properties"]["version"] == 2
    stale = requests.put(url, json=_feature(project, "lost update"),
                         headers={"Content-Type": "application/geo+json", "If-Match": '"1"', **editor})
    assert stale.status_code == 412
    assert requests.get(url).json()["properties"]["name"] == "replaced"

    r = requests.patch(url, json={"type": "Feature", "properties": {"name": "patched"}},
                       headers={"If-Match": '"2"', **editor})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"3"' and r.json()["properties"]["name"] == "patched"
    got = requests.get(url).json()
    assert got["properties"]["name"] == "patched" and got["properties"]["attributes"] == {"k": 1}
    assert requests.patch(url, json={"type": "Feature", "properties": {"name": "y"}}, headers=editor).status_code == 428

    assert requests.delete(url, headers={"If-Match": '"2"', **editor}).status_code == 412
    assert requests.delete(url, headers=editor).status_code == 428
    assert requests.delete(url, headers={"If-Match": '"3"', **editor}).status_code == 200
    assert requests.get(url).status_code == 404


def test_a_get_body_puts_back(server, project, editor):
    """GET -> edit -> PUT: the read-only members a GET gives (created_at, metrics, updated_at,
    version) are taken back unchanged; a changed one is a 400; a stale ETag is a 412 first.
    A successful PUT answers 200 with the item as stored (what a GET now gives) and its ETag."""
    items = f"{server}/collections/plots/items"
    url = requests.post(items, json=_feature(project, "round trip"),
                        headers={"Content-Type": "application/geo+json", **editor}).headers["Location"]
    try:
        got = requests.get(url)
        body, etag = got.json(), got.headers["ETag"]
        assert {"created_at", "updated_at", "version", "metrics"} <= set(body["properties"])
        body["properties"]["name"] = "edited"
        put = {"Content-Type": "application/geo+json", **editor}
        r = requests.put(url, data=json.dumps(body), headers={**put, "If-Match": etag})
        assert r.status_code == 200, r.text                   # the item as stored, with its new ETag
        assert r.json()["properties"]["name"] == "edited" and r.headers["ETag"] != etag
        again = requests.get(url)
        assert r.json() == {k: v for k, v in again.json().items() if k != "links"}
        assert r.headers["ETag"] == again.headers["ETag"]
        # the same (now stale) body and ETag: 412, not the 400 its stale read-only members would earn
        r = requests.put(url, data=json.dumps(body), headers={**put, "If-Match": etag})
        assert r.status_code == 412, r.text
        fresh = requests.get(url)
        body, etag = fresh.json(), fresh.headers["ETag"]
        body["properties"]["created_at"] = body["properties"]["created_at"].replace("+00:00", "Z")   # same instant
        assert requests.put(url, data=json.dumps(body), headers={**put, "If-Match": etag}).status_code == 200
        body, etag = requests.get(url).json(), requests.get(url).headers["ETag"]
        body["properties"]["version"] = 99
        r = requests.put(url, data=json.dumps(body), headers={**put, "If-Match": etag})
        assert r.status_code == 400 and "version" in r.text, r.text
        body["properties"].update(version=int(etag.strip('"')), metrics={"forged": 1})
        r = requests.patch(url, data=json.dumps(body), headers={**put, "If-Match": etag})
        assert r.status_code == 400 and "metrics" in r.text, r.text
    finally:   # the other tests count and sort this project's plots
        requests.delete(url, headers={**editor, "If-Match": "*"})


def test_geojson_is_served_as_geojson_and_accept_is_honoured(server, grid, project):
    items = f"{server}/collections/plots/items"
    fid = next(iter(grid))
    for url in (f"{items}?project_id={project}&limit=2", f"{items}/{fid}", f"{items}/{fid}?f=json"):
        for accept in (None, "application/geo+json", "application/json", "*/*",
                       "application/geo+json, text/html;q=0.5", "text/html;q=0.5, application/geo+json"):
            r = requests.get(url, headers={"Accept": accept} if accept else {})
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/geo+json", (url, accept)
            assert r.json()["type"] in ("Feature", "FeatureCollection")
    html = requests.get(f"{items}/{fid}", headers={"Accept": "text/html,application/geo+json;q=0.9"})
    assert html.headers["Content-Type"].startswith("text/html")
    assert requests.get(f"{items}/{fid}", headers={"Accept": "application/ld+json"}).headers[
        "Content-Type"].startswith("application/ld+json")
    assert requests.head(items, headers={"Accept": "application/geo+json"}).headers[
        "Content-Type"] == "application/geo+json"


@pytest.mark.parametrize("document", ["queryables", "schema"])
def test_queryables_declare_the_json_schema_dialect_by_its_https_uri(server, document):
    r = requests.get(f"{server}/collections/plots/{document}")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/schema+json")
    assert r.json()["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    assert r.json()["properties"]["name"]["type"] == "string"


def _allow(url: str, headers: dict) -> set[str]:
    r = requests.options(url, headers=headers)
    assert r.status_code in (200, 204), r.text
    return {m.strip() for m in r.headers["Allow"].split(",")}


def test_options_answers_what_the_caller_may_do(server, grid, project, editor, make_user):
    """QGIS sends OPTIONS on items with its bearer token and offers editing from `Allow`."""
    item, items = f"{server}/collections/plots/items/{next(iter(grid))}", f"{server}/collections/plots/items"
    read = {"GET", "HEAD", "OPTIONS"}
    assert _allow(item, editor) == read | {"PUT", "PATCH", "DELETE"}
    assert _allow(items, editor) == read | {"POST"}
    viewer = {"Authorization": f"Bearer {make_user('viewer', {project: 'viewer'}).token}"}
    for caller in ({}, viewer):
        assert _allow(item, caller) == read and _allow(items, caller) == read
    assert _allow(f"{server}/collections/scans/items", editor) == read
    unseen = requests.options(f"{server}/collections/plots/items/99999999", headers=editor)
    assert unseen.status_code == 404 and unseen.headers["Content-Type"] == "application/problem+json"


def test_sortby_is_parsed_before_pygeoapi(server, grid, project):
    # a "+" sent unencoded arrives as a space: still ascending
    up = requests.get(f"{server}/collections/plots/items?project_id={project}&limit=5&sortby=+name")
    down = requests.get(f"{server}/collections/plots/items?project_id={project}&limit=5&sortby=-name")
    assert up.status_code == 200 and down.status_code == 200, (up.text, down.text)
    names_up = [f["properties"]["name"] for f in up.json()["features"]]
    names_down = [f["properties"]["name"] for f in down.json()["features"]]
    assert names_up == sorted(names_up) and names_up[0] == "plot 0000"
    assert names_down == sorted(names_down, reverse=True) and names_down[0] > names_up[-1]


# -- bad input: always a 4xx that names the problem ----------------------------------------

BAD_REQUESTS = [
    ("GET", "/collections/plots/items?bbox=1,2,3", None, 400, "bbox"),
    ("GET", "/collections/plots/items?bbox=a,b,c,d", None, 400, "bbox"),
    ("GET", "/collections/plots/items?crs=http://www.opengis.net/def/crs/EPSG/0/99999", None, 400, "crs"),
    ("GET", "/collections/plots/items?filter=name%20%3D%3D%3D%20'x'", None, 400, "filter"),
    ("GET", "/collections/plots/items?filter=nosuchprop%20%3D%201", None, 400, "nosuchprop"),
    ("GET", "/collections/plots/items?filter=name%20%3D%201", None, 400, "cannot be applied"),
    ("GET", "/collections/plots/items?project_id=99999999999999999999", None, 400, "a number is out of range"),
    ("GET", "/collections/plots/items?datetime=20000-01-01T00:00:00Z", None, 400, "date"),
    ("GET", "/collections/plots/items?filter=%7Bbad&filter-lang=cql2-json", None, 400, "cql2-json"),
    ("GET", "/collections/plots/items?filter-lang=sql&filter=x", None, 400, "filter-lang"),
    ("GET", "/collections/plots/items?limit=0", None, 400, "limit"),
    ("GET", "/collections/plots/items?limit=1000000000", None, 400, "limit"),
    ("GET", "/collections/plots/items?limit=ten", None, 400, "limit"),
    ("GET", "/collections/plots/items?colour=red", None, 400, "colour"),
    ("GET", "/collections/plots/items?sortby=nosuch", None, 400, "sort"),
    ("GET", "/collections/plots/items?sortby=", None, 400, "sortby has an empty key"),
    ("GET", "/collections/plots/items?sortby=,name", None, 400, "sortby has an empty key"),
    ("GET", "/collections/plots/items?sortby=name,", None, 400, "sortby has an empty key"),
    ("GET", "/collections/plots/items?sortby=-", None, 400, "sortby has an empty key"),
    ("GET", "/collections/plots/items?sortby=-nosuch", None, 400, "'nosuch' is not a property"),
    ("GET", "/collections/plots/items?name=a%00b", None, 400, "U+0000"),
    ("GET", "/collections/plots/items?filter=name%3D'a%01b'", None, 400, "U+0001"),
    ("GET", "/collections/plots/items?cursor=garbage", None, 400, "cursor"),
    ("GET", "/collections/plots/items?datetime=yesterday", None, 400, "datetime"),
    ("GET", "/collections/plots/items/abc", None, 404, "abc"),
    ("GET", "/collections/plots/items/%D9%A1", None, 404, "ids are integers"),    # an Arabic-Indic 1
    ("GET", "/collections/plots/items/%C2%B9", None, 404, "ids are integers"),    # a superscript 1
    ("GET", "/collections/plots/items/99999999", None, 404, "99999999"),
    ("GET", "/collections/plots/items/1%0A", None, 404, "nothing at"),                # a newline: no id
    ("PUT", "/collections/plots/items/1%0A", {"type": "Feature"}, 404, "nothing at"),
    ("GET", "/collections/plots/items/1%09", None, 404, "nothing at"),                # a tab
    ("GET", "/projects/1%0D", None, 404, "nothing at"),
    ("GET", "/collections/nosuch/items", None, 404, "not found"),
    ("POST", "/collections/scans/items", {"type": "Feature"}, 405, "read-only"),
    ("PUT", "/collections/trees/items/1", {"type": "Feature"}, 405, "read-only"),
    ("DELETE", "/collections/rasters/items/1", None, 405, "read-only"),
    ("POST", "/collections/plots/items", {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [1, 0], [1, 1], [0, 0]]]}, "properties": {"name": "a\x00b", "project_id": 1}}, 400, "U+0000"),
    ("POST", "/collections/plots/items", {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [1, 0], [1, 1], [0, 0]]]}, "properties": {"name": "x", "project_id": 1,
                                                        "attributes": {"note": "\x1b[31m"}}}, 400, "U+001B"),
    ("POST", "/collections/plots/items", {"type": "Feature", "properties": {"name": "x", "project_id": 1}},
     400, "geometry"),
    ("POST", "/collections/plots/items", {"type": "Feature", "properties": {}}, 400, "required"),
    ("POST", "/collections/plots/items", {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, "properties": {"name": "bowtie", "project_id": 1}},
     400, "not valid"),
    ("POST", "/collections/plots/items", {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [1, 0], [1, 1], [0, 0]]]}, "properties": {"name": "x", "project_id": 987654}}, 400,
     "does not exist"),
    ("POST", "/collections/plots/items", {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [1, 0], [1, 1], [0, 0]]]}, "properties": {"name": "x", "project_id": 1, "secret": 1}}, 400,
     "secret"),
]


@pytest.mark.parametrize("method,path,body,status,needle", BAD_REQUESTS,
                         ids=[f"{m} {p}"[:70] for m, p, *_ in BAD_REQUESTS])
def test_bad_input_is_a_clear_4xx(server, admin_headers, method, path, body, status, needle):
    headers = {"Content-Type": "application/geo+json", **admin_headers} if body is not None else {}
    r = requests.request(method, server + path, data=json.dumps(body) if body is not None else None,
                         headers=headers, timeout=10)
    assert r.status_code == status, r.text
    assert needle.lower() in r.text.lower(), r.text
    # the database's own words stay in the log (providers/db_errors.py)
    assert not any(word in r.text for word in ("bigint", "operator does not exist", "Key (", "violates")), r.text


# f, lang and ui take the values the route serves; anything else is a 400 problem
UNKNOWN_VALUES = ["/?lang=AAA", "/openapi?ui=AAA", "/?f=", "/?f=xyz", "/collections?lang=", "/collections/plots/items?f=",
                  "/collections/plots/items?lang=fr", "/conformance?f=xml", "/jobs?f=xml", "/projects?f=",
                  "/collections/plots/queryables?profile=AAA", "/jobs/abc?f=jsonld"]
SERVED_VALUES = ["/?lang=en-US", "/?f=json", "/?f=html", "/jobs?f=html", "/openapi?f=html&ui=redoc", "/collections/plots/items?f=csv",
                 "/conformance?f=json"]


@pytest.mark.parametrize("path", UNKNOWN_VALUES)
def test_unknown_parameter_values_are_a_400_problem(server, path):
    r = requests.get(server + path)
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    assert "is not served here" in r.json()["detail"]


@pytest.mark.parametrize("path", SERVED_VALUES)
def test_served_parameter_values_still_work(server, path):
    assert requests.get(server + path).status_code == 200


def test_put_with_bad_geometry(server, db, project, editor):
    plot_id = db.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, 'g', "
                         "ST_Multi(ST_Expand(ST_SetSRID(ST_MakePoint(2, 2), 4326), 0.001))) RETURNING id",
                         (project,)).fetchone()[0]
    bad = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]},
           "properties": {"name": "g", "project_id": project}}
    r = requests.put(f"{server}/collections/plots/items/{plot_id}", json=bad,
                     headers={"Content-Type": "application/geo+json", "If-Match": '"1"', **editor})
    assert r.status_code == 400 and "geometry" in r.text
    assert db.execute("SELECT version FROM plots WHERE id = %s", (plot_id,)).fetchone()[0] == 1


# -- discovery: landing page, conformance, OpenAPI ------------------------------------------

def test_landing_page_and_conformance(server):
    rels = {l["rel"] for l in requests.get(f"{server}/?f=json").json()["links"]}
    assert {"service-desc", "data", "conformance", "auth", "uploads", "projects", "health"} <= rels
    conf = set(requests.get(f"{server}/conformance").json()["conformsTo"])
    assert "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter" in conf
    assert "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter" in conf
    assert "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text" in conf
    assert not any("ogcapi-records-1/1.0/conf/core" in c for c in conf)


def test_openapi_is_self_contained(server):
    doc = requests.get(f"{server}/openapi?f=json").json()
    refs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs and all(r.startswith("#/") for r in refs), [r for r in refs if not r.startswith("#/")]
    for ref in set(refs):
        target = doc
        for part in ref[2:].split("/"):
            target = target[part]
    items = doc["paths"]["/collections/plots/items"]["get"]
    limit = next(p for p in items["parameters"] if p.get("name") == "limit")
    assert limit["schema"]["default"] == 100 and limit["schema"]["maximum"] == 10000
    assert "patch" in doc["paths"]["/collections/plots/items/{featureId}"]
    assert "/readyz" in doc["paths"]


def test_health_and_readiness(server):
    assert requests.get(f"{server}/healthz").json() == {"status": "ok"}
    ready = requests.get(f"{server}/readyz").json()
    assert ready["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}


def test_errors_are_problem_json(server):
    r = requests.get(f"{server}/no/such/route")
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 404 and body["instance"] == "/no/such/route" and body["title"] == "Not Found"


def test_next_link_keeps_the_query(server, grid, project):
    page = requests.get(f"{server}/collections/plots/items",
                        params={"limit": 7, "project_id": project, "filter": "name LIKE 'plot 00%'"}).json()
    nxt = next(l["href"] for l in page["links"] if l["rel"] == "next")
    q = parse_qs(urlparse(nxt).query)
    assert q["limit"] == ["7"] and q["filter"] == ["name LIKE 'plot 00%'"] and "cursor" in q


def _link_header(response: requests.Response) -> dict[str, tuple[str, str]]:
    """{rel: (href, type)} of a Link header, parsed the way simple clients (ogctests) do:
    split on "," and ";" — so no URL or parameter may carry either."""
    out = {}
    for link in response.headers["Link"].split(","):
        href, *params = [p.strip() for p in link.split(";")]
        attrs = dict(p.split("=") for p in params)
        rel, mime = attrs["rel"].strip('"'), attrs["type"].strip('"')
        out[rel if rel != "alternate" else f"alternate {mime}"] = (href.strip("<>"), mime)
    return out


def test_link_headers_name_self_alternates_paging_and_queryables(server, grid, project):
    queryables = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
    head = requests.head(f"{server}/collections/plots/items", headers={"Accept": "application/json"})
    links = _link_header(head)
    assert head.status_code == 200 and links["self"][1] == "application/geo+json"
    assert {"alternate text/html", "alternate application/ld+json", "collection", queryables} <= set(links)
    assert requests.get(links[queryables][0]).json()["properties"]["name"]["type"] == "string"
    # an items page: next in the header is the body's next, bbox commas escaped
    r = requests.get(f"{server}/collections/plots/items", params={"limit": 3, "project_id": project,
                                                                  "bbox": "-180,-90,180,90"})
    links, body = _link_header(r), r.json()
    body_next = next(l["href"] for l in body["links"] if l["rel"] == "next")
    assert links["next"][0] == body_next.replace(",", "%2C")
    assert [f["id"] for f in requests.get(links["next"][0]).json()["features"]] == \
           [f["id"] for f in requests.get(body_next).json()["features"]]
    html = requests.get(links["alternate text/html"][0])
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    assert _link_header(html)["self"][1] == "text/html"
    # a collection and the list of collections
    links = _link_header(requests.get(f"{server}/collections/plots"))
    assert links["items"][0].endswith("/collections/plots/items") and queryables in links
    assert _link_header(requests.get(f"{server}/collections"))["self"][1] == "application/json"
    # an item
    fid = body["features"][0]["id"]
    links = _link_header(requests.get(f"{server}/collections/plots/items/{fid}"))
    assert links["self"][1] == "application/geo+json" and links["collection"][0].endswith("/collections/plots")


@pytest.mark.parametrize("method,path,template,params", [
    ("GET", "/collections/plots/items/99999999", "/collections/plots/items/{featureId}", {}),
    ("GET", "/collections/plots/items", "/collections/plots/items", {"f": "html"}),
    ("GET", "/collections/plots/items", "/collections/plots/items", {"limit": "0"}),
    ("GET", "/collections/plots", "/collections/plots", {"f": "jsonld"}),
    ("GET", "/collections/plots/queryables", "/collections/plots/queryables", {}),
    ("OPTIONS", "/collections/plots/items", "/collections/plots/items", {}),
    ("OPTIONS", "/collections/plots/items/99999999", "/collections/plots/items/{featureId}", {}),
    ("DELETE", "/projects/0", "/projects/{projectId}", {}),
    ("POST", "/collections/plots/items", "/collections/plots/items", {}),
])
def test_the_openapi_document_names_the_status_and_media_type_served(server, method, path, template, params):
    doc = requests.get(f"{server}/openapi?f=json").json()
    r = requests.request(method, server + path, params=params)
    declared = doc["paths"][template][method.lower()]["responses"]
    assert str(r.status_code) in declared, (r.status_code, list(declared))
    response = declared[str(r.status_code)]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    served = r.headers.get("Content-Type", "").split(";")[0]
    assert r.status_code == 204 or served in response["content"], (served, list(response.get("content", {})))


@pytest.mark.parametrize("collection", ["plots", "scans"])
def test_an_empty_jsonld_page_is_json(server, collection):
    """pygeoapi 0.21's items JSON-LD template left a trailing comma on an empty page."""
    r = requests.get(f"{server}/collections/{collection}/items", params={"f": "jsonld", "bbox": "0,0,0.0001,0.0001"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/ld+json")
    assert r.json()["type"] == "FeatureCollection" and "features" not in r.json()


def test_each_process_execution_declares_its_own_inputs(server):
    doc = requests.get(f"{server}/openapi?f=json").json()
    for process_id in ("detect-trees", "compare", "echo"):
        described = requests.get(f"{server}/processes/{process_id}").json()["inputs"]
        ref = doc["paths"][f"/processes/{process_id}/execution"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]["$ref"]
        inputs = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]["inputs"]
        assert set(inputs["properties"]) == set(described) and inputs["additionalProperties"] is False
        assert set(inputs["required"]) == {k for k, v in described.items() if v.get("minOccurs", 1) >= 1}


@pytest.mark.parametrize("value,served", [("2024-06-01T00:00:00Z/..", True), ("2024-06-01", True),
                                          ("../2024-06-01T10:00:00+02:00", True), ("/2024-06-01", True),
                                          ("0", False), ("..", False), ("0000-01-01", False), ("2024-13-01", False)])
def test_the_datetime_pattern_is_what_the_server_takes(server, value, served):
    import re
    doc = requests.get(f"{server}/openapi?f=json").json()
    pattern = doc["components"]["parameters"]["datetime"]["schema"]["pattern"]
    assert bool(re.match(pattern, value)) is served
    assert requests.get(f"{server}/collections/plots/items", params={"datetime": value}).status_code == \
        (200 if served else 400)


def test_text_rules_are_in_the_document(server):
    """A control character is a 400 everywhere (server/inputs.py): free strings say so."""
    import re
    doc = requests.get(f"{server}/openapi?f=json").json()
    pattern = doc["components"]["parameters"]["filter"]["schema"]["pattern"]
    assert re.match(pattern, "name = 'a'") and not re.match(pattern, "name = '\x00'")
    assert requests.get(f"{server}/collections/plots/items", params={"filter": "name = '\x01'"}).status_code == 400
    project = doc["paths"]["/projects"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert project["required"] == ["name"] and not re.match(project["properties"]["name"]["pattern"], "  ")
