"""The columns each collection publishes: name, SQL type and JSON Schema type.

One table per collection; the provider builds every query from this description,
so a property that is not listed here can be neither read, filtered nor sorted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ID_PATTERN = "[0-9]{1,19}"       # every table's `id`: a positive bigint, in ASCII digits
_ID = re.compile(ID_PATTERN)


def parse_id(text: str) -> int:
    """The row id `text` names; ValueError unless it is ASCII digits of a positive bigint
    (`int()` alone also takes " 7", "1_0" and other scripts' digits such as "١")."""
    if not _ID.fullmatch(text) or not 0 < int(text) < 2**63:
        raise ValueError(f"{text!r} is not a row id")
    return int(text)


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str                    # the PostgreSQL type to cast query values to
    json_type: str                   # JSON Schema type for queryables/schema
    nullable: bool = True
    writable: bool = False           # may a client set it through Features Part 4
    json_format: str | None = None   # e.g. date-time


@dataclass(frozen=True)
class Table:
    name: str
    geometry: str                    # geometry column (SRID 4326)
    geometry_type: str
    columns: tuple[Column, ...]
    time_field: str | None = None
    versioned: bool = False          # has a `version` column behind ETag/If-Match

    @property
    def fields(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}


def _c(name: str, sql_type: str, json_type: str, **kw) -> Column:
    return Column(name, sql_type, json_type, **kw)


TABLES: dict[str, Table] = {
    "plots": Table(
        name="plots", geometry="geom", geometry_type="MultiPolygon", time_field="updated_at",
        versioned=True,
        columns=(
            _c("project_id", "bigint", "integer", nullable=False, writable=True),
            _c("name", "text", "string", nullable=False, writable=True),
            _c("attributes", "jsonb", "object", nullable=False, writable=True),
            _c("metrics", "jsonb", "object"),
            _c("version", "integer", "integer", nullable=False),
            _c("created_at", "timestamptz", "string", nullable=False, json_format="date-time"),
            _c("updated_at", "timestamptz", "string", nullable=False, json_format="date-time"),
        ),
    ),
    "scans": Table(
        name="scans", geometry="footprint", geometry_type="Polygon", time_field="acquired_at",
        columns=(
            _c("project_id", "bigint", "integer", nullable=False),
            _c("name", "text", "string", nullable=False),
            _c("status", "text", "string", nullable=False),
            _c("error", "text", "string"),
            _c("size_bytes", "bigint", "integer"),
            _c("sha256", "text", "string"),
            _c("las_version", "text", "string"),
            _c("point_format", "smallint", "integer"),
            _c("point_count", "bigint", "integer"),
            _c("crs_epsg", "integer", "integer"),
            _c("density_pts_m2", "double precision", "number"),
            _c("classified_ground", "boolean", "boolean"),
            _c("warnings", "jsonb", "array", nullable=False),     # what is suspect in its files
            _c("acquired_at", "timestamptz", "string", json_format="date-time"),
            _c("created_at", "timestamptz", "string", nullable=False, json_format="date-time"),
        ),
    ),
    "trees": Table(
        name="trees", geometry="geom", geometry_type="Point", time_field="created_at",
        columns=(
            _c("scan_id", "bigint", "integer", nullable=False),
            _c("project_id", "bigint", "integer", nullable=False),
            _c("x", "double precision", "number"),
            _c("y", "double precision", "number"),
            _c("height_m", "real", "number"),
            _c("crown_area_m2", "real", "number"),
            _c("crown_diameter_m", "real", "number"),
            _c("apex_height_m", "real", "number"),
            _c("run_id", "text", "string"),
            _c("created_at", "timestamptz", "string", nullable=False, json_format="date-time"),
        ),
    ),
    "crowns": Table(
        name="crowns", geometry="geom", geometry_type="Polygon", time_field="created_at",
        columns=(
            _c("tree_id", "bigint", "integer"),
            _c("scan_id", "bigint", "integer", nullable=False),
            _c("project_id", "bigint", "integer", nullable=False),
            _c("area_m2", "real", "number"),
            _c("run_id", "text", "string"),
            _c("created_at", "timestamptz", "string", nullable=False, json_format="date-time"),
        ),
    ),
    "rasters": Table(
        name="rasters", geometry="footprint", geometry_type="Polygon", time_field="created_at",
        columns=(
            _c("scan_id", "bigint", "integer"),
            _c("project_id", "bigint", "integer", nullable=False),
            _c("kind", "text", "string", nullable=False),
            _c("crs_epsg", "integer", "integer"),
            _c("resolution_m", "double precision", "number"),
            _c("bands", "jsonb", "array"),
            _c("stats", "jsonb", "object"),
            _c("run_id", "text", "string"),
            _c("created_at", "timestamptz", "string", nullable=False, json_format="date-time"),
        ),
    ),
}
