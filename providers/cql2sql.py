"""CQL2 (as parsed by pygeofilter) to a parameterised PostgreSQL condition.

pygeofilter parses CQL2 text and JSON; its SQL backends either need SQLAlchemy
models or inline literal values into the SQL string. This small translator emits
psycopg `sql.Composed` with every value quoted by psycopg (never pasted as text), and refuses
properties the collection does not publish (a 400, not a 500).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from psycopg import sql
from pygeofilter import ast, values

from .schema import Table


class FilterError(ValueError):
    """The filter is well-formed CQL2 but cannot be applied to this collection."""


_COMPARISON = {ast.Equal: "=", ast.NotEqual: "<>", ast.LessThan: "<", ast.LessEqual: "<=",
               ast.GreaterThan: ">", ast.GreaterEqual: ">="}
_SPATIAL = {ast.GeometryIntersects: "ST_Intersects", ast.GeometryDisjoint: "ST_Disjoint",
            ast.GeometryContains: "ST_Contains", ast.GeometryWithin: "ST_Within",
            ast.GeometryTouches: "ST_Touches", ast.GeometryCrosses: "ST_Crosses",
            ast.GeometryOverlaps: "ST_Overlaps", ast.GeometryEquals: "ST_Equals"}
_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mul: "*", ast.Div: "/"}
_GEOMETRY_NAMES = {"geometry", "geom", "footprint"}


def to_sql(node: Any, table: Table, filter_srid: int = 4326, flip: bool = False) -> sql.Composable:
    """Translate a pygeofilter AST into a WHERE condition over `table`.

    Geometry literals are in `filter_srid` (lat/lon order when `flip`, as EPSG:4326
    is) and are transformed to the table's CRS84 geometries in SQL.
    """
    return _Translator(table, filter_srid, flip).condition(node)


class _Translator:
    def __init__(self, table: Table, filter_srid: int, flip: bool):
        self.table = table
        self.filter_srid = filter_srid
        self.flip = flip

    # -- conditions -----------------------------------------------------
    def condition(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.And):
            return sql.SQL("({} AND {})").format(self.condition(node.lhs), self.condition(node.rhs))
        if isinstance(node, ast.Or):
            return sql.SQL("({} OR {})").format(self.condition(node.lhs), self.condition(node.rhs))
        if isinstance(node, ast.Not):
            return sql.SQL("(NOT {})").format(self.condition(node.sub_node))
        if isinstance(node, ast.Include):
            return sql.SQL("FALSE" if node.not_ else "TRUE")
        if type(node) in _COMPARISON:
            return sql.SQL("({} {} {})").format(self.expr(node.lhs), sql.SQL(_COMPARISON[type(node)]),
                                                self.expr(node.rhs))
        if isinstance(node, ast.Between):
            return sql.SQL("({} {}BETWEEN {} AND {})").format(
                self.expr(node.lhs), sql.SQL("NOT " if node.not_ else ""),
                self.expr(node.low), self.expr(node.high))
        if isinstance(node, ast.Like):
            return self._like(node)
        if isinstance(node, ast.In):
            items = sql.SQL(", ").join(self.expr(v) for v in node.sub_nodes)
            return sql.SQL("({} {}IN ({}))").format(self.expr(node.lhs),
                                                   sql.SQL("NOT " if node.not_ else ""), items)
        if isinstance(node, ast.IsNull):
            return sql.SQL("({} IS {}NULL)").format(self.expr(node.lhs), sql.SQL("NOT " if node.not_ else ""))
        if type(node) in _SPATIAL:
            return sql.SQL("{}({}, {})").format(sql.SQL(_SPATIAL[type(node)]),
                                                self.expr(node.lhs), self.expr(node.rhs))
        if isinstance(node, ast.BBox):
            envelope = sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 4326)").format(
                *(sql.Literal(float(v)) for v in (node.minx, node.miny, node.maxx, node.maxy)))
            return sql.SQL("({} && {} AND ST_Intersects({}, {}))").format(
                self.expr(node.lhs), envelope, self.expr(node.lhs), envelope)
        if isinstance(node, ast.DistanceWithin):
            return sql.SQL("ST_DWithin({}::geography, {}::geography, {})").format(
                self.expr(node.lhs), self.expr(node.rhs), sql.Literal(float(node.distance)))
        if isinstance(node, (ast.TimeBefore, ast.TimeAfter, ast.TimeEquals, ast.TimeDuring)):
            return self._temporal(node)
        raise FilterError(f"the filter operation {type(node).__name__} is not supported")

    def _like(self, node: ast.Like) -> sql.Composable:
        # CQL2 LIKE uses SQL's wildcards (% and _) and backslash escapes, as PostgreSQL does.
        op = ("NOT " if node.not_ else "") + ("ILIKE" if node.nocase else "LIKE")
        return sql.SQL("({}::text {} {})").format(self.expr(node.lhs), sql.SQL(op), sql.Literal(str(node.pattern)))

    def _temporal(self, node: Any) -> sql.Composable:
        lhs = self.expr(node.lhs)
        rhs = node.rhs
        if isinstance(rhs, values.Interval):
            start = sql.Literal(rhs.start) if rhs.start is not None else sql.SQL("'-infinity'::timestamptz")
            end = sql.Literal(rhs.end) if rhs.end is not None else sql.SQL("'infinity'::timestamptz")
            if isinstance(node, ast.TimeDuring):
                return sql.SQL("({} BETWEEN {} AND {})").format(lhs, start, end)
            if isinstance(node, ast.TimeBefore):
                return sql.SQL("({} < {})").format(lhs, start)
            if isinstance(node, ast.TimeAfter):
                return sql.SQL("({} > {})").format(lhs, end)
            raise FilterError("T_EQUALS needs an instant, not an interval")
        op = {ast.TimeBefore: "<", ast.TimeAfter: ">", ast.TimeEquals: "="}.get(type(node))
        if op is None:
            raise FilterError("T_DURING needs an interval")
        return sql.SQL("({} {} {})").format(lhs, sql.SQL(op), self.expr(rhs))

    # -- expressions ----------------------------------------------------
    def expr(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.Attribute):
            return self.attribute(node.name)
        if type(node) in _ARITHMETIC:
            return sql.SQL("({} {} {})").format(self.expr(node.lhs), sql.SQL(_ARITHMETIC[type(node)]),
                                                self.expr(node.rhs))
        if isinstance(node, ast.Function):
            return self._function(node)
        if isinstance(node, (values.Geometry, values.Envelope)):
            geom = sql.SQL("ST_SetSRID(ST_GeomFromGeoJSON({}), {})").format(
                sql.Literal(json.dumps(node.geometry)), sql.Literal(self.filter_srid))
            if self.flip:
                geom = sql.SQL("ST_FlipCoordinates({})").format(geom)
            if self.filter_srid != 4326:
                geom = sql.SQL("ST_Transform({}, 4326)").format(geom)
            return geom
        if isinstance(node, bool) or node is None:
            return sql.Literal(node)
        if isinstance(node, (int, float, str, datetime, date)):
            return sql.Literal(node)
        if isinstance(node, list):
            return sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(self.expr(v) for v in node))
        raise FilterError(f"the filter value {node!r} is not supported")

    def _function(self, node: ast.Function) -> sql.Composable:
        name = node.name.lower()
        if name in ("lower", "casei") and len(node.arguments) == 1:
            return sql.SQL("lower({}::text)").format(self.expr(node.arguments[0]))
        if name == "bbox" and len(node.arguments) in (4, 6):
            a = [float(v) for v in node.arguments]
            minx, miny, maxx, maxy = (a[0], a[1], a[2], a[3]) if len(a) == 4 else (a[0], a[1], a[3], a[4])
            return sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 4326)").format(
                *(sql.Literal(v) for v in (minx, miny, maxx, maxy)))
        raise FilterError(f"the filter function {node.name}() is not supported")

    def attribute(self, name: str) -> sql.Composable:
        if name in _GEOMETRY_NAMES or name == self.table.geometry:
            return sql.Identifier(self.table.geometry)
        if name == "id":
            return sql.Identifier("id")
        column = self.table.fields.get(name)
        if column is None:
            raise FilterError(f"unknown property '{name}' in filter; queryables are: "
                              + ", ".join(["id", *self.table.fields]))
        return sql.Identifier(name)
