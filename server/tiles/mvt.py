"""Vector tiles (Mapbox Vector Tile) of plots, trees, crowns and scan footprints, made by
PostGIS (`ST_TileEnvelope`, `ST_AsMVTGeom`, `ST_AsMVT`) under the same visibility rule as
every other read. WebMercatorQuad only: `ST_TileEnvelope` tiles square quadtrees.

A tile holds at most `MAX_FEATURES` features of its layer; layers with many small
features (trees, crowns) are empty below their `minzoom`, where they would be
unreadable anyway. Below its `thin_below` zoom a point layer keeps one feature per
`THIN_CELL` (1/64 of the tile, ~4 px on screen): the tallest, so a far view shows
the dominant trees evenly spread instead of dots that hide the canopy under them (or
an arbitrary share of them). Empty tiles answer 204 No Content (OGC API - Tiles permits it).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from db.access import Principal, visible_projects
from db.pool import get_pool
from db.runs import run_rows

from ..errors import NotFound

EXTENT = 4096
BUFFER = 64
MAX_FEATURES = 20000
THIN_CELL = 64           # tile units (of EXTENT) per thinning cell


@dataclass(frozen=True)
class Layer:
    table: str
    geometry: str
    properties: str          # SQL select list of the feature attributes (trusted constant)
    minzoom: int
    title: str
    thin_below: int = 0      # below this zoom: the tallest point per THIN_CELL (the table has height_m)


LAYERS: dict[str, Layer] = {
    "plots": Layer("plots", "geom", "t.name, t.project_id, t.metrics", 0, "Plots"),
    "scans": Layer("scans", "footprint",
                   "t.name, t.project_id, t.status, t.point_count, t.density_pts_m2, "
                   "t.acquired_at::text AS acquired_at", 0, "Scan footprints"),
    "trees": Layer("trees", "geom", "t.scan_id, t.project_id, t.height_m, t.crown_area_m2, "
                   "t.crown_diameter_m", 13, "Trees", thin_below=16),
    "crowns": Layer("crowns", "geom", "t.tree_id, t.scan_id, t.project_id, t.area_m2", 14, "Crowns"),
}


def layer(collection: str) -> Layer:
    found = LAYERS.get(collection)
    if found is None:
        raise NotFound(f"collection {collection!r} has no vector tiles; these do: {', '.join(LAYERS)}")
    return found


def tile(database_url: str, collection: str, principal: Principal | None, z: int, y: int, x: int) -> bytes:
    """The MVT of `collection` at WebMercatorQuad z/y/x (tileMatrix/tileRow/tileCol); b'' when empty."""
    spec = layer(collection)
    if z < spec.minzoom:
        return b""
    features = sql.SQL("""
            SELECT t.id, {properties},
                   ST_AsMVTGeom(ST_Transform(t.{geometry}, 3857), bounds.tile, %(extent)s, %(buffer)s, true)
                   AS geom
            FROM {table} t, bounds
            WHERE t.{geometry} && ST_Transform(bounds.area, 4326) AND {visible} AND {current}
            LIMIT %(limit)s""").format(
        properties=sql.SQL(spec.properties), geometry=sql.Identifier(spec.geometry),
        table=sql.Identifier(spec.table), visible=visible_projects(principal, "project_id"),
        current=run_rows(spec.table, None))
    if z < spec.thin_below:
        cell = sql.SQL("floor(ST_X(f.geom) / %(cell)s), floor(ST_Y(f.geom) / %(cell)s)")
        features = sql.SQL("SELECT DISTINCT ON ({cell}) f.* FROM ({features}) f WHERE f.geom IS NOT NULL "
                           "ORDER BY {cell}, f.height_m DESC NULLS LAST").format(cell=cell, features=features)
    query = sql.SQL("""
        WITH bounds AS (SELECT ST_TileEnvelope(%(z)s, %(x)s, %(y)s) AS tile,
                               ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s) AS area)
        SELECT ST_AsMVT(q, %(name)s, %(extent)s, 'geom', 'id') FROM ({features}) q WHERE q.geom IS NOT NULL
    """).format(features=features)
    params = {"z": z, "x": x, "y": y, "margin": BUFFER / EXTENT, "name": collection,
              "extent": EXTENT, "buffer": BUFFER, "limit": MAX_FEATURES * (10 if z < spec.thin_below else 1),
              "cell": THIN_CELL}
    with get_pool(database_url).connection() as conn:
        row = conn.execute(query, params).fetchone()
    return bytes(row[0]) if row and row[0] else b""
