"""pygeoapi feature provider for Canopy's PostGIS tables.

Why not pygeoapi's own PostgreSQL provider: it runs `SELECT count(*)` on every
page, builds GeoJSON in Python with shapely, pages with OFFSET and knows nothing of
projects. This one builds the GeoJSON in PostgreSQL, pages with a keyset cursor
behind its `next`/`prev` links (a deep page costs what the first one does), counts
only when the count is cheap, filters by what the caller may see inside the SQL,
and versions items for ETag/If-Match.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
from psycopg import sql
from pygeoapi.provider.base import (BaseProvider, ProviderGenericError, ProviderInvalidQueryError,
                                    ProviderItemNotFoundError, SchemaType)

from db.access import visible_projects, writable_projects
from db.pool import get_pool
from db.runs import run_rows

from . import context
from .cql2sql import FilterError, to_sql
from .db_errors import CLIENT_ERRORS, describe
from .schema import TABLES, Column, Table, parse_id

_EPSG_URI = re.compile(r"(?:EPSG[/:](?:[0-9.]+[/:])?|EPSG::)(\d+)$")
_CRS84 = {"http://www.opengis.net/def/crs/OGC/1.3/CRS84", "urn:ogc:def:crs:OGC:1.3:CRS84"}


class InvalidItem(ProviderGenericError):
    """A client's feature cannot be stored as it is (the message says why)."""

    ogc_exception_code = "InvalidParameterValue"
    http_status_code = 400
    default_msg = "invalid item"


class NotAllowed(ProviderGenericError):
    """The caller sees the item but their role does not let them change it."""

    ogc_exception_code = "Forbidden"
    http_status_code = 403
    default_msg = "your role does not allow this change"


class PreconditionFailed(ProviderGenericError):
    """The item changed since the client read it (If-Match does not match)."""

    ogc_exception_code = "PreconditionFailed"
    http_status_code = 412
    default_msg = "the item has changed since it was read: fetch it again and retry with its new ETag"


class DatabaseUnavailable(ProviderGenericError):
    """PostgreSQL is unreachable (restarting, down): a 503 the client retries, never its error text."""

    ogc_exception_code = "ServiceUnavailable"
    http_status_code = 503
    default_msg = "the database is unavailable; retry in a few seconds"


def output_srid(crs_transform_spec: Any) -> tuple[int, bool]:
    """SRID to serve geometries in, and whether axes must be swapped (EPSG:4326 is lat/lon)."""
    if crs_transform_spec is None:
        return 4326, False
    uri = crs_transform_spec.target_crs_uri
    if uri in _CRS84:
        return 4326, False
    match = _EPSG_URI.search(uri)
    if not match:
        raise ProviderInvalidQueryError(user_msg=f"unsupported crs {uri}")
    srid = int(match.group(1))
    return srid, srid == 4326


class PostGISProvider(BaseProvider):
    """Features of one Canopy table (the provider's `data` names it)."""

    def __init__(self, provider_def: dict):
        super().__init__(provider_def)
        if self.data not in TABLES:
            raise RuntimeError(f"unknown Canopy table {self.data!r}")
        self.table: Table = TABLES[self.data]
        self.id_field = "id"
        self.time_field = self.table.time_field
        self.get_fields()

    # -- schema -----------------------------------------------------------
    def get_fields(self) -> dict:
        if not self._fields:
            for col in self.table.columns:
                entry = {"type": col.json_type}
                if col.json_format:
                    entry["format"] = col.json_format
                self._fields[col.name] = entry
        return self._fields

    def get_schema(self, schema_type: SchemaType = SchemaType.item):
        props = {name: dict(spec) for name, spec in self.get_fields().items()}
        if schema_type != SchemaType.item:
            props = {c.name: props[c.name] for c in self.table.columns if c.writable}
        schema = {"type": "object", "properties": {
            "geometry": {"$ref": "#/components/schemas/GeoJSONGeometry"}, **props}}
        if schema_type in (SchemaType.create, SchemaType.replace):
            schema["required"] = [c.name for c in self.table.columns if c.writable and not c.nullable
                                  and c.name != "attributes"]
        return "application/schema+json", schema

    # -- reading ------------------------------------------------------------
    def _feature_sql(self, srid: int, flip: bool, skip_geometry: bool,
                     select_properties: list[str]) -> sql.Composable:
        names = select_properties or [c.name for c in self.table.columns]
        props = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(n), sql.Identifier(n)) for n in names)
        geom = sql.Identifier(self.table.geometry)
        if skip_geometry:
            geometry = sql.SQL("NULL::json")
        else:
            g = geom if srid == 4326 else sql.SQL("ST_Transform({}, {})").format(geom, sql.Literal(srid))
            if flip:
                g = sql.SQL("ST_FlipCoordinates({})").format(g)
            digits = 7 if srid == 4326 else 3
            geometry = sql.SQL("ST_AsGeoJSON({}, {})::json").format(g, sql.Literal(digits))
        return sql.SQL("json_build_object('type', 'Feature', 'id', id, 'geometry', {}, "
                       "'properties', json_build_object({}))::text").format(geometry, props)

    def _where(self, bbox: list, datetime_: str | None, properties: list, filterq: Any
               ) -> list[sql.Composable]:
        where: list[sql.Composable] = [visible_projects(context.get().principal),
                                       run_rows(self.table.name, context.get().run)]
        if bbox:
            minx, miny, maxx, maxy = (float(v) for v in (bbox[:2] + bbox[2:4] if len(bbox) == 4
                                                           else [bbox[0], bbox[1], bbox[3], bbox[4]]))
            where.append(sql.SQL("{} && ST_MakeEnvelope({}, {}, {}, {}, 4326)").format(
                sql.Identifier(self.table.geometry), *(sql.Literal(v) for v in (minx, miny, maxx, maxy))))
        if datetime_ and self.time_field:
            where.append(self._datetime_clause(datetime_))
        fields = self.table.fields
        for name, value in properties:
            col = fields.get(name)
            if col is None:
                raise ProviderInvalidQueryError(user_msg=f"unknown property {name!r}")
            where.append(sql.SQL("{} = {}::{}").format(sql.Identifier(name), sql.Literal(value),
                                                       sql.SQL(col.sql_type)))
        ctx = context.get()
        if filterq is None:
            filterq = ctx.filter
        if filterq is not None:
            try:
                where.append(to_sql(filterq, self.table, ctx.filter_srid, ctx.filter_flip))
            except FilterError as err:
                raise ProviderInvalidQueryError(user_msg=str(err))
        return where

    def _datetime_clause(self, value: str) -> sql.Composable:
        col = sql.Identifier(self.time_field)
        if "/" in value:
            start, end = value.split("/", 1)
            parts = []
            if start not in ("", ".."):
                parts.append(sql.SQL("{} >= {}::timestamptz").format(col, sql.Literal(start)))
            if end not in ("", ".."):
                parts.append(sql.SQL("{} <= {}::timestamptz").format(col, sql.Literal(end)))
            return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")
        return sql.SQL("{} = {}::timestamptz").format(col, sql.Literal(value))

    def _order(self, sortby: list[dict]) -> list[tuple[str, bool]]:
        """Sort keys as (column, descending); `id` always last so the order is total."""
        keys = [(s["property"], s["order"] == "-") for s in sortby if s["property"] != "id"]
        id_desc = next((s["order"] == "-" for s in sortby if s["property"] == "id"), False)
        return keys + [("id", id_desc)]

    def _keyset_ok(self, keys: list[tuple[str, bool]]) -> bool:
        fields = self.table.fields
        return all(name == "id" or (name in fields and not fields[name].nullable
                                    and fields[name].sql_type != "jsonb") for name, _ in keys)

    @staticmethod
    def _after(keys: list[tuple[str, bool]], values: list, backwards: bool) -> sql.Composable:
        """Rows strictly after (or before) `values` in the order `keys`, written out
        as (a > x) OR (a = x AND b > y) ... so that mixed directions work."""
        ors = []
        for i, (name, desc) in enumerate(keys):
            ands = [sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v))
                    for (k, _), v in zip(keys[:i], values[:i])]
            greater = desc == backwards
            ands.append(sql.SQL("{} {} {}").format(sql.Identifier(name), sql.SQL(">" if greater else "<"),
                                                    sql.Literal(values[i])))
            ors.append(sql.SQL("({})").format(sql.SQL(" AND ").join(ands)))
        return sql.SQL("({})").format(sql.SQL(" OR ").join(ors))

    def query(self, offset: int = 0, limit: int = 10, resulttype: str = "results", bbox: list = [],
              datetime_: str | None = None, properties: list = [], sortby: list = [],
              select_properties: list = [], skip_geometry: bool = False, q: str | None = None,
              filterq: Any = None, crs_transform_spec: Any = None, **kwargs) -> dict:
        ctx = context.get()
        srid, flip = output_srid(crs_transform_spec)
        where = self._where(bbox, datetime_, properties, filterq)
        keys = self._order(sortby)
        keyset = self._keyset_ok(keys)
        cursor = _decode_cursor(ctx.cursor) if ctx.cursor else None
        if cursor and not keyset:
            raise ProviderInvalidQueryError(user_msg="cursor does not match the sort order")
        backwards = bool(cursor and cursor["dir"] == "prev")
        page_where = list(where)
        if cursor:
            if len(cursor["key"]) != len(keys):
                raise ProviderInvalidQueryError(user_msg="cursor does not match the sort order")
            page_where.append(self._after(keys, cursor["key"], backwards))
            offset = cursor["offset"]
        order = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL("DESC" if desc != backwards else "ASC"))
            for k, desc in keys)
        key_cols = sql.SQL(", ").join(sql.Identifier(k) for k, _ in keys)
        page = sql.SQL("SELECT {}, {} FROM {} WHERE {} ORDER BY {} LIMIT {} OFFSET {}").format(
            self._feature_sql(srid, flip, skip_geometry, select_properties), key_cols,
            sql.Identifier(self.table.name), sql.SQL(" AND ").join(page_where), order,
            sql.Literal(limit + 1), sql.Literal(0 if cursor else offset))
        count_needed = resulttype == "hits" or not cursor
        with self._connection() as conn:
            rows = [] if resulttype == "hits" else self._run(conn, page)
            more = len(rows) > limit
            rows = rows[:limit]
            if backwards:
                rows.reverse()
            matched = None
            if count_needed and (resulttype == "hits" or offset > 0 or more):
                matched = self._count(conn, where)
            elif count_needed:
                matched = len(rows)
        # A page served as JSON keeps each feature as PostgreSQL encoded it (orjson writes a
        # Fragment as it is); HTML, JSON-LD and exports get them decoded.
        features = [orjson.Fragment(r[0]) if ctx.json_page else orjson.loads(r[0]) for r in rows]
        result: dict[str, Any] = {"type": "FeatureCollection", "features": features,
                                  "numberReturned": len(features)}
        if matched is not None:
            result["numberMatched"] = matched
        if resulttype != "hits":
            result["links"] = self._links(rows, keys, keyset, offset, limit,
                                          has_next=more if not backwards else True,
                                          has_prev=(more if backwards else offset > 0 or bool(cursor)))
        return result

    def _links(self, rows: list, keys: list, keyset: bool, offset: int, limit: int,
               has_next: bool, has_prev: bool) -> list[dict]:
        """`next`/`prev` links carrying a keyset cursor (or an offset when the sort
        order has nullable keys). pygeoapi keeps links a provider supplies."""
        ctx = context.get()
        if not ctx.items_url:
            return []
        if not rows:
            ctx.page_links = []
            return []
        base = {k: v for k, v in ctx.query.items() if k not in ("cursor", "offset")}
        links = []
        n = len(keys)
        for rel, wanted, row, new_offset in (("prev", has_prev, rows[0], max(0, offset - limit)),
                                             ("next", has_next, rows[-1], offset + len(rows))):
            if not wanted:
                continue
            params = dict(base)
            if keyset:
                key = [_jsonable(v) for v in row[1:1 + n]]
                params["cursor"] = _encode_cursor({"dir": rel, "key": key, "offset": new_offset})
            else:
                params["offset"] = str(new_offset)
            links.append({"rel": rel, "type": "application/geo+json",
                          "title": f"Items ({rel})", "href": f"{ctx.items_url}?{urlencode(params)}"})
        ctx.page_links = list(links)  # pygeoapi appends to the list it is given
        return links

    def _count(self, conn: psycopg.Connection, where: list[sql.Composable]) -> int:
        """numberMatched: exact when at most `count_cap` rows match, else the planner's
        estimate (never below `count_cap` + 1). Clients such as QGIS read it from the first
        page, so it is never left out.

        The estimate is asked first (a fraction of a millisecond), so a page of a big table
        never pays for counting past the cap; an exact count is made only when the estimate is
        at most the cap. It stops at ten times the cap: statistics that lag behind a bulk insert
        (12,000 trees estimated under 10,000 in a shared database) still get their true count."""
        cap = int(self.options.get("count_cap", 10000)) if self.options else 10000
        estimate = self._estimate(conn, where)
        if estimate <= cap:
            stmt = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} WHERE {} LIMIT {}) t").format(
                sql.Identifier(self.table.name), sql.SQL(" AND ").join(where), sql.Literal(10 * cap + 1))
            n = self._run(conn, stmt)[0][0]
            if n <= 10 * cap:
                return n
        return max(estimate, cap + 1)

    def _estimate(self, conn: psycopg.Connection, where: list[sql.Composable]) -> int:
        """The planner's estimate of the rows `where` matches. The visibility rule (where[0])
        is given to it as the list of the caller's visible projects: the planner misjudges
        the rule's semi-join badly, and reads each listed project's share of the table from
        its statistics, so the estimate says nothing of the projects the caller cannot see."""
        conditions = list(where[1:])
        principal = context.get().principal
        if principal is None or not principal.is_admin:
            ids = self._run(conn, sql.SQL("SELECT coalesce(array_agg(id), '{{}}') FROM projects WHERE {}").format(
                visible_projects(principal, column="id")))[0][0]
            conditions.append(sql.SQL("project_id = ANY({}::bigint[])").format(sql.Literal(ids)))
        plan = self._run(conn, sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {}").format(
            sql.Identifier(self.table.name), sql.SQL(" AND ").join(conditions or [sql.SQL("TRUE")])))
        return int(plan[0][0][0]["Plan"]["Plan Rows"])

    def get(self, identifier: Any, crs_transform_spec: Any = None, **kwargs) -> dict:
        ident = _parse_id(identifier)
        srid, flip = output_srid(crs_transform_spec)
        version = sql.Identifier("version") if self.table.versioned else sql.SQL("NULL")
        stmt = sql.SQL("SELECT {}, {} FROM {} WHERE id = {} AND {}").format(
            self._feature_sql(srid, flip, False, []), version, sql.Identifier(self.table.name),
            sql.Literal(ident), visible_projects(context.get().principal))
        with self._connection() as conn:
            rows = self._run(conn, stmt)
        if not rows:
            raise ProviderItemNotFoundError(user_msg=f"no item {identifier} in {self.table.name}")
        context.get().version = rows[0][1]
        feature = json.loads(rows[0][0])
        return feature

    # -- writing (Features Part 4) ---------------------------------------------
    def create(self, item: Any) -> int:
        values, props = self._item_values(item, partial=False)
        cols = list(values)
        stmt = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id, version").format(
            sql.Identifier(self.table.name), sql.SQL(", ").join(sql.Identifier(c) for c in cols),
            sql.SQL(", ").join(values[c] for c in cols))
        with self._connection() as conn:
            self._check_target_project(conn, props.get("project_id"))
            row = self._run(conn, stmt)[0]
        context.get().version = row[1]
        return row[0]

    def update(self, identifier: Any, item: Any) -> bool:
        return self._write(identifier, item, partial=False)

    def patch(self, identifier: Any, item: Any) -> bool:
        """JSON merge patch of an item: only the members present change."""
        return self._write(identifier, item, partial=True)

    def delete(self, identifier: Any) -> bool:
        ident = _parse_id(identifier)
        stmt = sql.SQL("DELETE FROM {} WHERE id = {} AND {} AND {} RETURNING id").format(
            sql.Identifier(self.table.name), sql.Literal(ident), self._may_change(), self._version_check())
        with self._connection() as conn:
            if not self._run(conn, stmt):
                self._explain_missing(conn, ident)
        return True

    def _version_check(self) -> sql.Composable:
        expected = context.get().if_match
        if expected is None or not self.table.versioned:
            return sql.SQL("TRUE")
        return sql.SQL("version = {}").format(sql.Literal(expected))

    def _may_change(self) -> sql.Composable:
        principal = context.get().principal
        return sql.SQL("{} AND {}").format(visible_projects(principal), writable_projects(principal))

    def _check_target_project(self, conn: psycopg.Connection, project_id: Any) -> None:
        """Property-level rule: an item may only be put in a project the caller can write."""
        if project_id is None:
            return
        principal = context.get().principal
        stmt = sql.SQL("SELECT {} FROM projects WHERE id = {} AND {}").format(
            writable_projects(principal, column="id"), sql.Literal(project_id),
            visible_projects(principal, column="id"))
        rows = self._run(conn, stmt)
        if not rows:
            raise InvalidItem(user_msg=f"project_id {project_id} does not exist")
        if not rows[0][0]:
            raise NotAllowed(user_msg=f"you may not write to project {project_id}")

    def _write(self, identifier: Any, item: Any, partial: bool) -> bool:
        """Replace or patch an item. If-Match is checked before the body (a stale ETag is a
        412 whatever the body holds); the body may carry the read-only members a GET gave,
        as they are stored. The UPDATE checks the version again: a write in between is a 412."""
        ident = _parse_id(identifier)
        with self._connection() as conn:
            values, props = self._item_values(item, partial, stored=self._check_precondition(conn, ident))
            self._check_target_project(conn, props.get("project_id"))
            rows = self._run(conn, self._update_sql(ident, values))
            if not rows:
                self._explain_missing(conn, ident)
        context.get().version = rows[0][0]
        return True

    def _update_sql(self, ident: int, values: dict[str, sql.Composable]) -> sql.Composable:
        sets = [sql.SQL("{} = {}").format(sql.Identifier(c), v) for c, v in values.items()]
        if self.table.versioned:
            sets += [sql.SQL("version = version + 1"), sql.SQL("updated_at = now()")]
        return sql.SQL("UPDATE {} SET {} WHERE id = {} AND {} AND {} RETURNING version").format(
            sql.Identifier(self.table.name), sql.SQL(", ").join(sets), sql.Literal(ident),
            self._may_change(), self._version_check())

    def may_write(self, identifier: Any = None) -> bool:
        """May the caller change this item, or, without one, create items in some project?
        An item they cannot see is ProviderItemNotFoundError, as for a read."""
        principal = context.get().principal
        with self._connection() as conn:
            if identifier is None:
                stmt = sql.SQL("SELECT EXISTS (SELECT 1 FROM projects WHERE {})").format(
                    writable_projects(principal, column="id"))
                return bool(self._run(conn, stmt)[0][0])
            return self._writable(conn, _parse_id(identifier))

    def _writable(self, conn: psycopg.Connection, ident: int) -> bool:
        return self._lookup(conn, ident)[0]

    def _lookup(self, conn: psycopg.Connection, ident: int) -> tuple[bool, Any, dict]:
        """Whether the caller may change the item, its version, and its read-only
        properties as a GET shows them. An item they cannot see is a 404."""
        principal = context.get().principal
        read_only = [c.name for c in self.table.columns if not c.writable]
        version = sql.Identifier("version") if self.table.versioned else sql.SQL("NULL")
        stmt = sql.SQL("SELECT {}, {}, {} FROM {} WHERE id = {} AND {}").format(
            writable_projects(principal), version, self._feature_sql(4326, False, True, read_only),
            sql.Identifier(self.table.name), sql.Literal(ident), visible_projects(principal))
        rows = self._run(conn, stmt)
        if not rows:
            raise ProviderItemNotFoundError(user_msg=f"no item {ident} in {self.table.name}")
        return bool(rows[0][0]), rows[0][1], orjson.loads(rows[0][2])["properties"]

    def _check_precondition(self, conn: psycopg.Connection, ident: int) -> dict:
        """404 unseen, 403 not writable, 412 when If-Match names another version; else the
        item's read-only properties as stored."""
        writable, version, stored = self._lookup(conn, ident)
        if not writable:
            raise NotAllowed(user_msg=f"your role does not allow changing {self.table.name} {ident}")
        expected = context.get().if_match
        if expected is not None and self.table.versioned and version != expected:
            raise PreconditionFailed()
        return stored

    def _explain_missing(self, conn: psycopg.Connection, ident: int) -> None:
        """Why a write touched no row: 404 unseen, 403 not writable, else 412 stale."""
        self._check_precondition(conn, ident)
        raise PreconditionFailed()

    def _item_values(self, item: Any, partial: bool, stored: dict | None = None
                     ) -> tuple[dict[str, sql.Composable], dict]:
        """Validate a GeoJSON Feature from a client; its column values and properties.
        Read-only members equal to the `stored` item's (a GET body sent back) are ignored."""
        try:
            feature = json.loads(item) if isinstance(item, (str, bytes)) else item
        except ValueError as err:
            raise InvalidItem(user_msg=f"the body is not JSON: {err}")
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise InvalidItem(user_msg="the body must be a GeoJSON Feature")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise InvalidItem(user_msg="properties must be an object")
        writable = {c.name: c for c in self.table.columns if c.writable}
        changed = sorted(name for name in set(props) - set(writable) - {"id"}
                         if stored is None or name not in stored
                         or not _same(self.table.fields[name], props[name], stored[name]))
        if changed:
            raise InvalidItem(user_msg=f"properties {', '.join(changed)} cannot be written; writable: "
                                       f"{', '.join(writable)}" + (" (read-only ones may be sent only as they "
                                                                   "are stored)" if stored is not None else ""))
        values: dict[str, sql.Composable] = {}
        for name, col in writable.items():
            if name not in props:
                if not partial and not col.nullable and name != "attributes":
                    raise InvalidItem(user_msg=f"property {name!r} is required")
                continue
            value = props[name]
            if value is None and not col.nullable:
                raise InvalidItem(user_msg=f"property {name!r} may not be null")
            if col.sql_type == "jsonb":
                if not isinstance(value, dict):
                    raise InvalidItem(user_msg=f"property {name!r} must be an object")
                value = json.dumps(value)
            elif col.json_type == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
                raise InvalidItem(user_msg=f"property {name!r} must be an integer")
            elif col.json_type == "string" and not isinstance(value, str):
                raise InvalidItem(user_msg=f"property {name!r} must be a string")
            values[name] = sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(col.sql_type))
        if "geometry" in feature or not partial:
            values[self.table.geometry] = self._geometry_value(feature.get("geometry"))
        if not values:
            raise InvalidItem(user_msg="nothing to change")
        return values, props

    def _geometry_value(self, geometry: Any) -> sql.Composable:
        allowed = {"MultiPolygon": ("Polygon", "MultiPolygon"), "Polygon": ("Polygon",),
                   "Point": ("Point",)}[self.table.geometry_type]
        if not isinstance(geometry, dict) or geometry.get("type") not in allowed:
            raise InvalidItem(
                user_msg=f"geometry must be a GeoJSON {' or '.join(allowed)}")
        from shapely.geometry import shape  # validation only; the database stores it
        try:
            geom = shape(geometry)
        except Exception as err:  # shapely raises several types for bad coordinates
            raise InvalidItem(user_msg=f"geometry is not valid GeoJSON: {err}")
        if geom.is_empty or not geom.is_valid:
            from shapely.validation import explain_validity
            raise InvalidItem(user_msg=f"geometry is not valid: {explain_validity(geom)}")
        minx, miny, maxx, maxy = geom.bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise InvalidItem(user_msg="geometry is outside longitude/latitude bounds (CRS84)")
        expr = sql.SQL("ST_SetSRID(ST_GeomFromGeoJSON({}), 4326)").format(sql.Literal(json.dumps(geometry)))
        if self.table.geometry_type == "MultiPolygon":
            expr = sql.SQL("ST_Multi({})").format(expr)
        return expr

    # -- plumbing ---------------------------------------------------------------
    def _connection(self):
        return get_pool().connection()

    @staticmethod
    def _run(conn: psycopg.Connection, stmt: sql.Composable) -> list[tuple]:
        """Run one statement (pooled connections autocommit) and map database errors
        caused by the client's input to 400s."""
        try:
            with conn.cursor() as cur:
                cur.execute(stmt)
                return cur.fetchall() if cur.description else []
        except psycopg.errors.IntegrityError as err:
            raise InvalidItem(user_msg=f"invalid item: {describe(err)}")
        except CLIENT_ERRORS as err:
            raise ProviderInvalidQueryError(user_msg=f"the query cannot be applied: {describe(err)}")
        except psycopg.OperationalError:
            raise DatabaseUnavailable()


def _parse_id(identifier: Any) -> int:
    try:
        return parse_id(str(identifier))
    except ValueError:
        raise ProviderItemNotFoundError(user_msg=f"no item {identifier!r}: ids are integers")


def _same(col: Column, sent: Any, stored: Any) -> bool:
    """Is a read-only member sent back unchanged? Instants compare as instants
    (`Z` or `+00:00`, any precision a client rewrites them with)."""
    if col.json_format == "date-time" and isinstance(sent, str) and isinstance(stored, str):
        try:
            return datetime.fromisoformat(sent) == datetime.fromisoformat(stored)
        except ValueError:
            return False
    return sent == stored


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _encode_cursor(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> dict:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["dir"] not in ("next", "prev") or not isinstance(data["key"], list) \
                or not isinstance(data["offset"], int):
            raise ValueError
        return data
    except (ValueError, KeyError, TypeError):
        raise ProviderInvalidQueryError(user_msg="cursor is not one this server made")
