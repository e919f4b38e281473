"""True extents of the collections, served in /collections and /collections/{id}.

pygeoapi takes a collection's extent from its configuration (Canopy's said the whole
world). The real boxes are kept per collection and project in `collection_extents`
by triggers (migration 0006): an insert widens its project's box from the rows it
inserted, in the same transaction; an update or delete marks the box stale, and it is
recomputed here once, by the first request that needs it (the run and scan deletions
recompute at once, see `refresh_stale`). A request therefore reads a few cached rows,
never the big tables. Each caller gets the union of the boxes of the projects they may
see, so a private project's whereabouts never leak. Temporal extents come from the
collection's time field (plots: created..updated, scans: acquisition, trees, crowns
and rasters: their run's commit time). An empty collection has no box: it is served
as the whole world (what clients expect to zoom to) with no temporal extent.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from flask import Flask, Response, g, request
from psycopg import Connection, sql

from db.access import Principal, visible_projects
from db.pool import get_pool

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
WORLD = [-180.0, -90.0, 180.0, 90.0]
# collection -> (geometry column, column of its earliest time, column of its latest time)
SOURCES: dict[str, tuple[str, str, str]] = {
    "plots": ("geom", "created_at", "updated_at"),
    "scans": ("footprint", "acquired_at", "acquired_at"),
    "trees": ("geom", "created_at", "created_at"),
    "crowns": ("geom", "created_at", "created_at"),
    "rasters": ("footprint", "created_at", "created_at"),
}
_COLLECTIONS = re.compile(r"^/collections(?:/(?P<c>[^/]+))?/?$")


def refresh(conn: Connection, collection: str, project_id: int, gen: int) -> None:
    """Recompute one stale box; skipped if it changed since `gen` was read (a racing
    change marks it stale again, so the box never misses a committed row)."""
    geom, first, last = SOURCES[collection]
    conn.execute(sql.SQL(
        "UPDATE collection_extents e SET valid = true, t_min = n.t0, t_max = n.t1, bbox = CASE WHEN n.b IS NOT NULL "
        "THEN ARRAY[ST_XMin(n.b), ST_YMin(n.b), ST_XMax(n.b), ST_YMax(n.b)] END "
        "FROM (SELECT ST_Extent({geom}) AS b, min({first}) AS t0, max({last}) AS t1 FROM {table} "
        "      WHERE project_id = %(project)s) n "
        "WHERE e.collection = %(collection)s AND e.project_id = %(project)s AND e.gen = %(gen)s AND NOT e.valid").format(
        geom=sql.Identifier(geom), first=sql.Identifier(first), last=sql.Identifier(last),
        table=sql.Identifier(collection)), {"project": project_id, "collection": collection, "gen": gen})


def refresh_stale(conn: Connection, where: sql.Composable = sql.SQL("TRUE")) -> int:
    """Recompute the stale boxes matching `where`; returns how many there were."""
    stale = conn.execute(sql.SQL("SELECT collection, project_id, gen FROM collection_extents "
                                 "WHERE NOT valid AND {} AND project_id IN (SELECT id FROM projects)").format(where)
                         ).fetchall()
    for collection, project_id, gen in stale:
        if collection in SOURCES:
            refresh(conn, collection, project_id, gen)
    return len(stale)


def extents(principal: Principal | None) -> dict[str, dict[str, Any]]:
    """The OGC `extent` of every collection, as `principal` sees it."""
    visible = visible_projects(principal, "project_id")
    with get_pool().connection() as conn:
        refresh_stale(conn, visible)
        rows = conn.execute(sql.SQL(
            "SELECT collection, min(bbox[1]), min(bbox[2]), max(bbox[3]), max(bbox[4]), min(t_min), max(t_max) "
            "FROM collection_extents WHERE {} AND project_id IN (SELECT id FROM projects) GROUP BY collection"
        ).format(visible)).fetchall()
    found = {r[0]: r[1:] for r in rows}
    return {name: _extent(*found.get(name, (None,) * 6)) for name in SOURCES}


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def _extent(minx, miny, maxx, maxy, t_min: datetime | None, t_max: datetime | None) -> dict[str, Any]:
    bbox = WORLD if minx is None else [minx, miny, maxx, maxy]
    extent: dict[str, Any] = {"spatial": {"bbox": [bbox], "crs": CRS84}}
    if t_min is not None or t_max is not None:
        extent["temporal"] = {"interval": [[_iso(t_min), _iso(t_max)]], "trs": GREGORIAN}
    return extent


def _serve_extents(response: Response) -> Response:
    """Put the true extents into pygeoapi's /collections and /collections/{id} (JSON)."""
    match = _COLLECTIONS.match(request.path)
    if (not match or request.method != "GET" or response.status_code != 200
            or "json" not in (response.headers.get("Content-Type") or "")):
        return response
    name = match.group("c")
    if name is not None and name not in SOURCES:
        return response
    body = json.loads(response.get_data())
    known = extents(g.get("principal"))
    for collection in body.get("collections", []) if name is None else [body]:
        if collection.get("id") in known:
            collection["extent"] = known[collection["id"]]
    response.set_data(json.dumps(body))
    return response


def register(app: Flask) -> None:
    app.after_request(_serve_extents)


def refresh_now() -> int:
    """Recompute every stale box at once (after deleting runs, scans or projects, so that
    the next reader does not pay for it); boxes of deleted projects are dropped."""
    with get_pool().connection() as conn:
        conn.execute("DELETE FROM collection_extents WHERE project_id NOT IN (SELECT id FROM projects)")
        return refresh_stale(conn)
