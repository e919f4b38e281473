"""Exports from `/collections/{id}/items`: `f=gpkg|shp|fgb|csv`, or the Accept header.

An export is answered before pygeoapi sees the request (a before-request hook run
after the Features layer has checked the query and parsed the filter), with the
same WHERE the provider builds for a GeoJSON page: the visibility rule, `bbox`
(`bbox-crs`), `datetime`, property filters and the CQL2 `filter`. It is every
matching row, not one page: `limit`/`offset` apply only when given, and are not
capped by `CANOPY_LIMIT_MAX`. `sortby` orders it, `crs` picks the geometries' CRS.
The file is written to the scratch workspace, sent, then removed.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from flask import Response, current_app, request, send_file
from psycopg import sql
from pygeoapi.provider.base import ProviderGenericError

from db.pool import get_pool
from providers import context
from providers.postgis import output_srid
from providers.schema import TABLES

from ..errors import BadRequest
from .writer import FORMATS, Format, write

_ITEMS = re.compile(r"^/collections/(?P<c>[^/]+)/items/?$")
_JSON_TYPES = ["application/geo+json", "application/json", "text/html", "application/ld+json"]


def requested_format() -> Format | None:
    """The export format asked for by `f`, or else by Accept when it prefers one of
    ours to JSON and HTML; None: not an export (pygeoapi answers)."""
    f = request.args.get("f")
    if f is not None:
        return FORMATS.get(f)
    ours = {media: fmt for fmt in FORMATS.values() for media in fmt.accept}
    best = request.accept_mimetypes.best_match(_JSON_TYPES + list(ours))
    if best in ours and request.accept_mimetypes[best] > max(request.accept_mimetypes[t] for t in _JSON_TYPES):
        return ours[best]
    return None


class _Spec:   # what output_srid reads
    def __init__(self, uri: str):
        self.target_crs_uri = uri


def _srid(name: str) -> int | None:
    uri = request.args.get(name)
    if not uri:
        return None
    try:
        return output_srid(_Spec(uri))[0]
    except ProviderGenericError:
        raise BadRequest(f"{name} {uri!r} is not supported; use CRS84 or an EPSG URI")


def _bbox() -> list[float]:
    raw = request.args.get("bbox")
    if not raw:
        return []
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        raise BadRequest(f"bbox {raw!r} must be 4 or 6 comma-separated numbers")
    if len(values) not in (4, 6):
        raise BadRequest(f"bbox {raw!r} must be 4 or 6 comma-separated numbers")
    if len(values) == 6:
        values = values[:2] + values[3:5]
    crs = request.args.get("bbox-crs")
    if crs:
        try:
            srid, lat_lon = output_srid(_Spec(crs))
        except ProviderGenericError:
            raise BadRequest(f"bbox-crs {crs!r} is not supported; use CRS84 or an EPSG URI")
        if srid != 4326 or lat_lon:
            from pyproj import Transformer   # the authority's axis order in (EPSG:4326: lat, lon), CRS84 out
            values = list(Transformer.from_crs(f"EPSG:{srid}", "OGC:CRS84").transform_bounds(*values))
    return values


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(raw)


def _order(collection: str) -> sql.Composable:
    keys = []
    for key in filter(None, (context.get().query.get("sortby") or "").split(",")):
        desc = key.startswith("-")
        keys.append(sql.SQL("t.{} {}").format(sql.Identifier(key.lstrip("+-")), sql.SQL("DESC" if desc else "ASC")))
    return sql.SQL(", ").join(keys + [sql.SQL("t.id")])


def export_items() -> Response | None:
    """The before-request hook: an export of the items, or None to let pygeoapi answer."""
    match = _ITEMS.match(request.path)
    if not match or request.method not in ("GET", "HEAD") or match.group("c") not in TABLES:
        return None
    fmt = requested_format()
    if fmt is None:
        return None
    from ..features import _provider     # the collection's provider builds the WHERE
    collection = match.group("c")
    table = TABLES[collection]
    provider = _provider(collection)
    properties = [(k, v) for k, v in request.args.items() if k in table.fields]
    where = sql.SQL(" AND ").join(provider._where(_bbox(), request.args.get("datetime"), properties, None))
    srid, order = _srid("crs") or 4326, _order(collection)
    limit, offset = _int_arg("limit"), _int_arg("offset") or 0

    def make(folder: Path) -> Path:
        path = folder / f"{collection}.{fmt.extension}"
        with get_pool().connection() as conn:
            write(conn, table, where, fmt, path, srid=srid, order=order, limit=limit, offset=offset)
        return path

    return send_made(collection, make, fmt.media_type)


def send_made(prefix: str, make: Callable[[Path], Path], mimetype: str) -> Response:
    """The file ``make(folder)`` writes into a fresh scratch folder, sent as an attachment;
    the folder is removed once the response is closed (at once when making fails)."""
    scratch = current_app.config["CANOPY_SETTINGS"].work_dir / "exports"
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=scratch))
    try:
        path = make(folder)
        response = send_file(path, mimetype=mimetype, as_attachment=True, download_name=path.name,
                             conditional=False, etag=False)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    response.call_on_close(lambda: shutil.rmtree(folder, ignore_errors=True))
    return response
