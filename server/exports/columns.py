"""The flat columns an export writes for a collection, as SQL expressions and Arrow types.

Every format gets the same flat table: the collection's columns, JSON objects
flattened (plots' `metrics` become one column per metric named with its unit, e.g.
`zmean_m`, `cover_pct`; their `attributes` one column per key), `lon`/`lat` (the
point, or a point on the polygon, in WGS 84) and, for trees and crowns, `x`/`y` in
the scan's projected CRS with `crs_epsg`. Projected coordinates are the ones the
analysis made (trees keep them); they are never overwritten by lon/lat.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pyarrow as pa
from psycopg import sql

from processes.lidar.metrics import METRIC_NAMES, METRIC_UNITS
from providers.schema import Table

_SUFFIX = {"metre": "m", "percent": "pct", "intensity": "intensity", "count": "count", "1": ""}
UNIT_OF = dict(zip(METRIC_NAMES, METRIC_UNITS))
_ARROW = {"bigint": pa.int64(), "integer": pa.int32(), "smallint": pa.int32(), "real": pa.float32(),
          "double precision": pa.float64(), "text": pa.string(), "boolean": pa.bool_(),
          "timestamptz": pa.timestamp("us", tz="UTC")}
_ISO = "YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\""


@dataclass(frozen=True)
class Out:
    """One output column: its name, the SQL that computes it, its Arrow type."""

    name: str
    expr: sql.Composable
    arrow: pa.DataType


def metric_column(name: str) -> str:
    """`zmean` -> `zmean_m`: the metric's name with its unit (dimensionless ones bare)."""
    suffix = _SUFFIX.get(UNIT_OF.get(name, "1"), "")
    return f"{name}_{suffix}" if suffix else name


def _json_keys(conn: psycopg.Connection, source: sql.Composable, column: str, where: sql.Composable
               ) -> list[tuple[str, str]]:
    """(key, kind) of every key of the jsonb `column` over the matching rows; kind is
    number, boolean or text (mixed kinds are text)."""
    stmt = sql.SQL(
        "SELECT e.key, CASE WHEN bool_and(jsonb_typeof(e.value) IN ('number', 'null')) THEN 'number' "
        "WHEN bool_and(jsonb_typeof(e.value) IN ('boolean', 'null')) THEN 'boolean' ELSE 'text' END "
        "FROM (SELECT {col} FROM {table} WHERE {where} AND jsonb_typeof({col}) = 'object') t, "
        "jsonb_each(t.{col}) e GROUP BY e.key").format(
        col=sql.Identifier(column), table=source, where=where)
    rows = conn.execute(stmt).fetchall()
    order = {name: i for i, name in enumerate(METRIC_NAMES)}
    return sorted(rows, key=lambda r: (order.get(r[0], len(order)), r[0]))


def _json_value(column: str, key: str, kind: str) -> tuple[sql.Composable, pa.DataType]:
    text = sql.SQL("(t.{} ->> {})").format(sql.Identifier(column), sql.Literal(key))
    if kind == "number":
        return sql.SQL("{}::double precision").format(text), pa.float64()
    if kind == "boolean":
        return sql.SQL("{}::boolean").format(text), pa.bool_()
    return text, pa.string()


def source_of(table: Table, source: sql.Composable | None) -> sql.Composable:
    """What rows are read from: the table, or a query with its columns (e.g. plots with
    one run's metrics), aliased by the caller."""
    return sql.Identifier(table.name) if source is None else sql.SQL("({})").format(source)


def columns(conn: psycopg.Connection, table: Table, where: sql.Composable, *,
            source: sql.Composable | None = None) -> list[Out]:
    """The output columns for `table`'s rows matching `where` (read from `t`, the
    filtered table or `source`, and `s`, the scan it belongs to). Times are ISO 8601 UTC
    text (`...Z`): what a CSV shows, and what Arrow parses into its timestamps."""
    out = [Out("id", sql.SQL("t.id"), pa.int64())]
    for col in table.columns:
        ident = sql.SQL("t.{}").format(sql.Identifier(col.name))
        if col.sql_type == "jsonb" and table.name == "plots" and col.name in ("metrics", "attributes"):
            continue                                      # flattened below
        if col.sql_type == "jsonb":
            out.append(Out(col.name, sql.SQL("{}::text").format(ident), pa.string()))
        elif col.sql_type == "timestamptz":
            out.append(Out(col.name, sql.SQL("to_char({} AT TIME ZONE 'UTC', {})").format(
                ident, sql.Literal(_ISO)), _ARROW[col.sql_type]))
        else:
            out.append(Out(col.name, ident, _ARROW[col.sql_type]))
    taken = {o.name for o in out}
    if table.name == "plots":
        for key, kind in _json_keys(conn, sql.SQL("{} src").format(source_of(table, source)), "metrics", where):
            expr, arrow = _json_value("metrics", key, kind)
            name = metric_column(key)
            out.append(Out(name if name not in taken else f"metrics_{name}", expr, arrow))
            taken.add(out[-1].name)
        for key, kind in _json_keys(conn, sql.SQL("{} src").format(source_of(table, source)), "attributes", where):
            expr, arrow = _json_value("attributes", key, kind)
            out.append(Out(key if key not in taken else f"attr_{key}", expr, arrow))
            taken.add(out[-1].name)
    geom = sql.SQL("t.{}").format(sql.Identifier(table.geometry))
    point = geom if table.geometry_type == "Point" else sql.SQL("ST_PointOnSurface({})").format(geom)
    if "scan_id" in table.fields and table.name != "rasters":
        if "x" not in taken:                              # crowns: the centroid in the scan's CRS
            native = sql.SQL("ST_Transform(ST_Centroid({}), s.crs_epsg)").format(geom)
            out += [Out("x", sql.SQL("ST_X({})").format(native), pa.float64()),
                    Out("y", sql.SQL("ST_Y({})").format(native), pa.float64())]
        out.append(Out("crs_epsg", sql.SQL("s.crs_epsg"), pa.int32()))
    out += [Out("lon", sql.SQL("ST_X({})").format(point), pa.float64()),
            Out("lat", sql.SQL("ST_Y({})").format(point), pa.float64())]
    return out


def select(table: Table, cols: list[Out], where: sql.Composable, geometry_srid: int | None,
           order: sql.Composable, limit: int | None = None, offset: int = 0,
           source: sql.Composable | None = None, geometry_as: str = "wkb") -> sql.Composable:
    """The export's SELECT: `cols` (and the geometry in `geometry_srid` unless None, as
    hex WKB in `geometry`, or as WKT in `WKT` for a CSV) of the rows matching `where`,
    which names the table's columns unqualified."""
    exprs = [sql.SQL("{} AS {}").format(c.expr, sql.Identifier(c.name)) for c in cols]
    if geometry_srid is not None:
        geom = sql.SQL("t.{}").format(sql.Identifier(table.geometry))
        if geometry_srid != 4326:
            geom = sql.SQL("ST_Transform({}, {})").format(geom, sql.Literal(geometry_srid))
        exprs.append(sql.SQL("encode(ST_AsBinary({}), 'hex') AS geometry").format(geom) if geometry_as == "wkb"
                     else sql.SQL('ST_AsText({}) AS "WKT"').format(geom))
    scan_join = sql.SQL("LEFT JOIN scans s ON s.id = t.scan_id") \
        if "scan_id" in table.fields and table.name != "rasters" else sql.SQL("")
    tail = sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL("")
    if offset:
        tail = sql.SQL("{} OFFSET {}").format(tail, sql.Literal(offset))
    return sql.SQL("SELECT {} FROM (SELECT * FROM {} src WHERE {}) t {} ORDER BY {}{}").format(
        sql.SQL(", ").join(exprs), source_of(table, source), where, scan_join, order, tail)
