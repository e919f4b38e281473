"""Field plots imported from a forester's file: `POST /projects/{id}/plots` with a
GeoPackage, a zipped Shapefile or a CSV of plot centres as the body.

Every column but the geometry (and the name column) becomes a plot attribute, numbers as
numbers: the measured stems/ha, basal area, heights, volume that `fit-area-model` is fitted
to. Polygons are kept as drawn; points (a CSV's coordinates, or point layers) are plot
centres and become circles of `radius` metres (circular field plots, 11.28 m for 400 m²),
drawn in a local equidistant projection so that their area is right anywhere. Coordinates
are read in the file's CRS (`crs=EPSG:…` for a CSV, or a file without one) and stored in
WGS 84 like every plot. The import is one transaction: a file with one bad row imports
nothing, and the 400 names the row. Reading is GDAL's (pyogrio): its GPKG, ESRI Shapefile
and CSV drivers.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pyogrio
import shapely
from flask import Blueprint, jsonify, request
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from db.pool import get_pool

from .auth import policy
from .errors import BadRequest
from .inputs import ROW_ID, check_query, check_text

bp = Blueprint("field_plots", __name__)

MAX_PLOTS = 10_000
# body media type -> (file suffix, how GDAL opens it)
FORMATS = {"application/geopackage+sqlite3": ".gpkg", "application/zip": ".zip", "text/csv": ".csv"}
_CSV_X = "x,X,easting,Easting,lon,Lon,longitude,Longitude,LON,LONGITUDE"
_CSV_Y = "y,Y,northing,Northing,lat,Lat,latitude,Latitude,LAT,LATITUDE"
_QUERY = {"radius", "crs", "name", "layer"}


def read_plots(data: bytes, media: str, radius: float | None, crs: str | None, name_field: str,
               layer: str | None = None) -> list[tuple[str, bytes, dict]]:
    """(name, WKB MultiPolygon in EPSG:4326, attributes) of each feature of the file."""
    suffix = FORMATS[media]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"plots{suffix}"
        path.write_bytes(data)
        source = f"/vsizip/{path}" if suffix == ".zip" else str(path)
        options = {"x_possible_names": _CSV_X, "y_possible_names": _CSV_Y, "autodetect_type": "YES",
                   "keep_geom_columns": "NO"} if suffix == ".csv" else {}
        try:
            meta, _, wkb, fields = pyogrio.raw.read(source, layer=layer, **options)[:4]
        except Exception as err:   # GDAL's reasons are for people: "not recognized as a supported file format"
            reason = str(err).replace(source, "the file").replace(str(path), "the file").split("; It might help")[0]
            raise BadRequest(f"cannot read the plots file as {media}: {reason}") from None
    if wkb is None or not len(wkb):
        raise BadRequest("the file holds no features with a geometry (a CSV needs x/y or lon/lat columns)")
    if len(wkb) > MAX_PLOTS:
        raise BadRequest(f"{len(wkb)} plots in one file; at most {MAX_PLOTS}")
    source_crs = _crs(crs or meta.get("crs"), bool(crs))
    geoms = shapely.from_wkb(wkb)
    empty = [i for i, g in enumerate(geoms) if g is None or g.is_empty]
    if empty:
        raise BadRequest(f"row {empty[0] + 1} has no geometry")
    polygons = _as_polygons(geoms, source_crs, radius)
    names = list(meta["fields"])
    rows = []
    for i, polygon in enumerate(polygons):
        attributes = {}
        for field, values in zip(names, fields):
            value = _plain(values[i])
            if value is not None:
                attributes[check_text(str(field), f"column {field!r}")] = (
                    check_text(value, f"row {i + 1}, column {field!r}") if isinstance(value, str) else value)
        name = attributes.pop(name_field, None)
        name = str(name) if name not in (None, "") else f"plot {i + 1}"
        rows.append((name[:200], shapely.to_wkb(polygon), attributes))
    return rows


def _crs(text: str | None, given: bool) -> CRS:
    if given and not re.fullmatch(r"EPSG:[0-9]{4,5}", text):
        raise BadRequest(f"crs {text!r}: give an EPSG code, e.g. crs=EPSG:32610")
    if not text:
        raise BadRequest("the file names no CRS: give crs=EPSG:… (e.g. crs=EPSG:4326 for lon/lat)")
    try:
        crs = CRS.from_user_input(text)
    except CRSError:
        raise BadRequest(f"crs {text!r} is not a CRS pyproj knows ({'the crs parameter' if given else 'the file'})")
    if crs.is_vertical or not (crs.is_projected or crs.is_geographic):
        raise BadRequest(f"crs {text!r} is not a horizontal CRS")
    return crs


def _as_polygons(geoms: np.ndarray, crs: CRS, radius: float | None) -> list:
    """Each geometry as a MultiPolygon in EPSG:4326: polygons reprojected, points buffered
    by `radius` metres in an azimuthal equidistant projection centred on the plots."""
    to_wgs84 = Transformer.from_crs(crs, 4326, always_xy=True)
    kinds = set(shapely.get_type_id(geoms).tolist())
    points, polygons = {0}, {3, 6}
    if not kinds <= points | polygons:
        raise BadRequest("plots are polygons or points (plot centres); the file has lines or collections")
    out = []
    lon, lat = to_wgs84.transform(*shapely.get_coordinates(geoms).T)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all() and np.abs(lon).max() <= 180
            and np.abs(lat).max() <= 90):
        raise BadRequest(f"the plots lie outside the world in {crs.to_string()}: is the crs right?")
    centre = f"+proj=aeqd +lat_0={np.mean(lat):.6f} +lon_0={np.mean(lon):.6f} +datum=WGS84 +units=m"
    to_local = Transformer.from_crs(crs, centre, always_xy=True)
    from_local = Transformer.from_crs(centre, 4326, always_xy=True)
    if kinds & points and not (radius and radius > 0):
        raise BadRequest("the plots are points (centres): give radius=… in metres (11.28 for a 400 m² plot)")
    for i, geom in enumerate(geoms):
        if shapely.get_type_id(geom) == 0:
            geom = shapely.transform(shapely.transform(geom, lambda c: np.column_stack(to_local.transform(*c.T))
                                                       ).buffer(radius, quad_segs=16),
                                     lambda c: np.column_stack(from_local.transform(*c.T)))
        else:
            geom = shapely.transform(geom, lambda c: np.column_stack(to_wgs84.transform(*c.T)))
        if not geom.is_valid:
            raise BadRequest(f"row {i + 1}: {shapely.is_valid_reason(geom)}")
        out.append(geom if geom.geom_type == "MultiPolygon" else shapely.MultiPolygon([geom]))
    return out


def _plain(value):
    """A column value as JSON: numbers as numbers (NaN and NULL left out), text as text."""
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str, bool)):
        return value
    return None if value is None else str(value)


def _float_arg(name: str) -> float | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number") from None
    if not (math.isfinite(value) and 0 < value <= 1000):
        raise BadRequest(f"{name} must be between 0 and 1000 (metres)")
    return value


@bp.post("/projects/<id:project_id>/plots")
def import_plots(project_id: int):
    policy.require_project(project_id, policy.WRITE)
    check_query(_QUERY)
    media = request.mimetype
    if media not in FORMATS:
        raise BadRequest(f"send the plots file as one of {', '.join(FORMATS)}", status=415,
                         code="UnsupportedMediaType")
    rows = read_plots(request.get_data(), media, _float_arg("radius"), request.args.get("crs"),
                      request.args.get("name", "name"), request.args.get("layer"))
    with get_pool().connection() as conn, conn.transaction():
        ids = [conn.execute("INSERT INTO plots (project_id, name, geom, attributes) VALUES "
                            "(%s, %s, ST_GeomFromWKB(%s, 4326), %s) RETURNING id",
                            (project_id, name, wkb, json.dumps(attributes))).fetchone()[0]
               for name, wkb, attributes in rows]
    return jsonify(imported=len(ids), ids=ids, project_id=project_id), 201


PATHS = {"/projects/{projectId}/plots": {"post": {
    "summary": "Import field plots from a GeoPackage, a zipped Shapefile or a CSV (editors)",
    "description": __doc__, "operationId": "importPlots", "tags": ["auth"],
    "parameters": [
        {"name": "projectId", "in": "path", "required": True, "schema": ROW_ID},
        {"name": "radius", "in": "query", "required": False, "description": "Radius (m) of circular plots "
         "given by their centres", "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                                               "maximum": 1000}},
        {"name": "crs", "in": "query", "required": False, "description": "The coordinates' CRS when the file "
         "names none (a CSV): EPSG:…", "schema": {"type": "string", "pattern": "^EPSG:[0-9]{4,5}$"}},
        {"name": "name", "in": "query", "required": False, "description": "The column holding each plot's "
         "name (default: name; otherwise plot 1, plot 2, …)", "schema": {"type": "string"}},
        {"name": "layer", "in": "query", "required": False, "description": "The layer of a GeoPackage "
         "holding several", "schema": {"type": "string"}}],
    "requestBody": {"required": True, "content": {media: {"schema": {"type": "string", "format": "binary"}}
                                                  for media in FORMATS}},
    "responses": {"201": {"description": "The plots created", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"imported": {"type": "integer"}, "project_id": {"type": "integer"},
                                         "ids": {"type": "array", "items": {"type": "integer"}}}}}}},
        **{code: {"$ref": "#/components/responses/Problem"} for code in ("400", "401", "403", "404", "413", "415")}},
    "security": [{"bearerAuth": []}]}}}
