"""Which raster a request names, whether the caller may see it, and where its file is.

`rasters.storage_uri` semantics (the one place they are defined):

- a *storage key*, relative to the storage root (`CANOPY_STORAGE_URL`, a local
  directory or `s3://bucket/prefix`), e.g. `rasters/12/chm.tif` — what Canopy's
  processes write;
- or an absolute `file:///...` URI, for files kept outside the storage root
  (rows are written by the server's own processes and admins, never by callers).

A raster the caller may not read answers 404 exactly like a missing one: the
visibility rule is applied in the same SQL statement that finds the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from flask import current_app, g
from psycopg import sql
from psycopg.rows import dict_row

from db.access import Principal, visible_projects
from db.pool import get_pool

from ..errors import NotFound
from ..storage import LocalStorage, Storage, storage_of

KINDS = ("dtm", "dsm", "chm", "density", "metrics")


@dataclass(frozen=True)
class Raster:
    id: int
    project_id: int
    kind: str
    path: str               # what GDAL opens: a local path, or /vsis3/… for S3
    storage: Storage        # where the file is, and its key there (for the COG download)
    key: str
    version: str            # changes whenever the file changes (local: size + mtime + inode; S3: ETag)
    public: bool            # readable by anonymous callers (drives Cache-Control public/private)
    crs_epsg: int | None
    resolution_m: float | None
    bands: Any
    stats: Any
    bbox: tuple[float, float, float, float] | None   # CRS84 footprint bounds
    size: int


def resolve(storage_uri: str, storage: Storage) -> tuple[Storage, str]:
    """The storage holding a `storage_uri` and its key there (see the module docstring)."""
    parsed = urlparse(storage_uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        return LocalStorage(path.parent), path.name
    if parsed.scheme:
        raise ValueError(f"unsupported raster storage URI scheme {parsed.scheme!r}")
    storage.gdal_path(storage_uri)                       # raises ValueError on a key escaping the root
    return storage, storage_uri


_QUERY = sql.SQL("""
    SELECT r.id, r.project_id, r.kind, r.storage_uri, r.crs_epsg, r.resolution_m, r.bands, r.stats,
           p.visibility = 'public' AS public,
           ST_XMin(r.footprint) AS xmin, ST_YMin(r.footprint) AS ymin,
           ST_XMax(r.footprint) AS xmax, ST_YMax(r.footprint) AS ymax
    FROM rasters r JOIN projects p ON p.id = r.project_id
    WHERE r.id = %s AND {visible}
""")


def principal() -> Principal | None:
    return g.get("principal")


def get_raster(raster_id: int) -> Raster:
    """The raster `raster_id` (from an `<id:…>` URL part) if the caller may read it and its
    file exists; else NotFound."""
    settings = current_app.config["CANOPY_SETTINGS"]
    query = _QUERY.format(visible=visible_projects(principal(), "project_id"))
    with get_pool(settings.database_url).connection() as conn:
        row = conn.cursor(row_factory=dict_row).execute(query, (raster_id,)).fetchone()
    if row is None:
        raise NotFound(f"no raster {raster_id}")
    try:
        storage, key = resolve(row["storage_uri"], storage_of(settings))
        version, size = storage.stat(key)
    except (OSError, ValueError) as exc:
        current_app.logger.warning("raster %s: file unavailable: %s", raster_id, exc)
        raise NotFound(f"the file of raster {raster_id} is not available") from exc
    bbox = None if row["xmin"] is None else (row["xmin"], row["ymin"], row["xmax"], row["ymax"])
    return Raster(id=row["id"], project_id=row["project_id"], kind=row["kind"], path=storage.gdal_path(key),
                  storage=storage, key=key,
                  version=version, public=bool(row["public"]), crs_epsg=row["crs_epsg"],
                  resolution_m=row["resolution_m"], bands=row["bands"], stats=row["stats"],
                  bbox=bbox, size=size)


def base_url() -> str:
    """Where clients reach the server: every link in tiles metadata starts with it."""
    return current_app.config["CANOPY_SETTINGS"].public_url
