"""Field plots imported from files (server/field_plots.py): a GeoPackage of plot polygons,
a zipped Shapefile and a CSV of plot centres become plots with their measured attributes,
in one transaction, for editors only."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import psycopg
import pyogrio
import pytest
import requests
import shapely

pytestmark = pytest.mark.integration
X0, Y0 = 538_000.0, 5_460_000.0      # EPSG:32610, near the demo forest


@pytest.fixture()
def editor_project(make_user, db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name, visibility) VALUES ('field plots', 'private') "
                               "RETURNING id").fetchone()[0]
    return project, make_user("analyst", {project: "editor"}), make_user("viewer", {project: "viewer"})


def _post(server, project, user, body: bytes, media: str, **params):
    return requests.post(f"{server}/projects/{project}/plots", data=body, params=params, timeout=60,
                         headers={"Content-Type": media, "Authorization": f"Bearer {user.token}"})


def _plots(db_url, project):
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT name, attributes, ST_Area(geom::geography) FROM plots WHERE project_id = %s "
                            "ORDER BY id", (project,)).fetchall()


def _layer(path, geoms, fields: dict, driver: str):
    pyogrio.raw.write(path, shapely.to_wkb(geoms), geometry_type="Polygon" if geoms[0].geom_type == "Polygon"
                      else "Point", field_data=list(fields.values()), fields=list(fields), crs="EPSG:32610",
                      driver=driver)


def test_a_geopackage_of_plot_polygons(server, editor_project, db_url, tmp_path):
    project, editor, _ = editor_project
    squares = np.array([shapely.box(X0 + 100 * i, Y0, X0 + 100 * i + 20, Y0 + 20) for i in range(3)])
    _layer(tmp_path / "plots.gpkg", squares, {"name": np.array(["A1", "A2", "A3"], dtype=object),
                                              "stems_ha": np.array([450.0, 620.5, np.nan]),
                                              "basal_m2ha": np.array([31, 40, 28], dtype=np.int32)}, "GPKG")
    r = _post(server, project, editor, (tmp_path / "plots.gpkg").read_bytes(), "application/geopackage+sqlite3")
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == 3 and len(r.json()["ids"]) == 3
    plots = _plots(db_url, project)
    assert [p[0] for p in plots] == ["A1", "A2", "A3"]
    assert plots[0][1] == {"stems_ha": 450.0, "basal_m2ha": 31} and plots[2][1] == {"basal_m2ha": 28}   # NaN left out
    assert all(abs(p[2] - 400) < 2 for p in plots), [p[2] for p in plots]
    # the plots serve as features with their attributes
    items = requests.get(f"{server}/collections/plots/items", params={"project_id": project},
                         headers={"Authorization": f"Bearer {editor.token}"}).json()
    assert sorted(f["properties"]["name"] for f in items["features"]) == ["A1", "A2", "A3"]


def test_a_csv_of_plot_centres_becomes_circles_of_the_radius(server, editor_project, db_url):
    project, editor, _ = editor_project
    csv = "plot,easting,northing,stems_ha,volume_m3ha,note\n" + "\n".join(
        f"P{i},{X0 + 50 * i},{Y0 + 30},{300 + i},{250.5 + i},thinned" for i in range(4))
    r = _post(server, project, editor, csv.encode(), "text/csv", crs="EPSG:32610", radius="11.28", name="plot")
    assert r.status_code == 201, r.text
    plots = _plots(db_url, project)
    assert [p[0] for p in plots] == ["P0", "P1", "P2", "P3"]
    assert plots[1][1] == {"stems_ha": 301, "volume_m3ha": 251.5, "note": "thinned"}
    assert all(abs(p[2] - np.pi * 11.28**2) < 0.01 * 400 for p in plots), [p[2] for p in plots]
    with psycopg.connect(db_url) as conn:
        x, y = conn.execute("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Transform(ST_Centroid(geom), 32610) c "
                            "FROM plots WHERE project_id = %s AND name = 'P2') q", (project,)).fetchone()
    assert abs(x - (X0 + 100)) < 0.05 and abs(y - (Y0 + 30)) < 0.05


def test_a_zipped_shapefile_of_centres(server, editor_project, db_url, tmp_path):
    project, editor, _ = editor_project
    centres = np.array([shapely.Point(X0 + 10 * i, Y0) for i in range(2)])
    _layer(tmp_path / "centres.shp", centres, {"name": np.array(["S1", "S2"], dtype=object),
                                               "ba": np.array([22.5, 30.0])}, "ESRI Shapefile")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        for part in tmp_path.glob("centres.*"):
            z.write(part, part.name)
    r = _post(server, project, editor, zipped.getvalue(), "application/zip", radius="5.64")
    assert r.status_code == 201, r.text
    assert [(p[0], p[1]) for p in _plots(db_url, project)] == [("S1", {"ba": 22.5}), ("S2", {"ba": 30.0})]


@pytest.mark.parametrize("body,media,params,status,says", [
    (b"x,y,v\n538000,5460000,1\n", "text/csv", {"radius": "10"}, 400, "names no CRS"),
    (b"x,y,v\n538000,5460000,1\n", "text/csv", {"crs": "EPSG:32610"}, 400, "give radius"),
    (b"x,y,v\n538000,5460000,1\n", "text/csv", {"crs": "WGS84", "radius": "10"}, 400, "EPSG code"),
    (b"x,y,v\n538000,5460000,1\n", "text/csv", {"crs": "EPSG:4326", "radius": "10"}, 400, "outside the world"),
    (b"a,b\n1,2\n", "text/csv", {"crs": "EPSG:32610", "radius": "10"}, 400, "no features with a geometry"),
    (b"not a geopackage at all", "application/geopackage+sqlite3", {}, 400, "cannot read the plots file"),
    (b"PK\x03\x04 truncated", "application/zip", {}, 400, "cannot read"),
    (b"x,y\n1,2\n", "application/json", {}, 415, "send the plots file"),
    (b"x,y,v\n538000,5460000,1\n", "text/csv", {"crs": "EPSG:32610", "radius": "-1"}, 400, "between 0"),
    (b"x,y,v\n538000,5460000,1\n", "text/csv", {"crs": "EPSG:32610", "radius": "5", "size": "3"}, 400, "unknown"),
])
def test_bad_files_are_refused_with_the_reason(server, editor_project, db_url, body, media, params, status, says):
    project, editor, _ = editor_project
    r = _post(server, project, editor, body, media, **params)
    assert r.status_code == status and says in r.json()["detail"] and "/tmp" not in r.text, r.text
    assert _plots(db_url, project) == []


def test_one_bad_row_imports_nothing_and_only_editors_import(server, editor_project, db_url):
    project, editor, viewer = editor_project
    csv = f"x,y,note\n{X0},{Y0},fine\n{X0 + 50},{Y0},bad\x01text\n".encode()
    r = _post(server, project, editor, csv, "text/csv", crs="EPSG:32610", radius="5")
    assert r.status_code == 400 and "row 2" in r.json()["detail"], r.text
    assert _plots(db_url, project) == []
    good = f"x,y\n{X0},{Y0}\n".encode()
    assert _post(server, project, viewer, good, "text/csv", crs="EPSG:32610", radius="5").status_code == 403
    anonymous = requests.post(f"{server}/projects/{project}/plots", data=good, headers={"Content-Type": "text/csv"},
                              params={"crs": "EPSG:32610", "radius": "5"})
    assert anonymous.status_code == 401
    assert _plots(db_url, project) == []
