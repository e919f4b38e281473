"""One run's products as files, and as one zip with a manifest.

`write_products` writes a scan's trees and crowns (those of a run, or matching any
SQL condition), the plots with that run's metrics, and the run's rasters (the COGs
as stored) into a directory; `run_zip` adds `manifest.json` (the run's parameters,
engine version, the scan's CRS, each file's size and sha256) and zips them. The
route `GET /scans/{scanId}/runs/{runId}/export` serves that zip to whoever may read
the scan.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import psycopg
from flask import Blueprint, current_app
from psycopg import sql

from db.pool import get_pool
from db.runs import RUN_ID
from providers.schema import TABLES

from ..auth import policy
from ..errors import NotFound
from ..storage import storage_of
from .views import send_made
from .writer import FORMATS, write

bp = Blueprint("exports", __name__)

# (collection, format) of every vector file of a run
VECTOR_FILES = (("trees", "gpkg"), ("trees", "csv"), ("crowns", "gpkg"), ("plots", "gpkg"), ("plots", "csv"))
_MEDIA = {"gpkg": FORMATS["gpkg"].media_type, "csv": "text/csv", "tif": "image/tiff; application=geotiff; "
          "profile=cloud-optimized", "json": "application/json"}


def _plots_of_run(run_id: str) -> sql.Composable:
    """The plots a run measured, each with that run's metrics (plots.metrics is the latest run's)."""
    cols = sql.SQL(", ").join(sql.SQL("p.{}").format(sql.Identifier(c.name)) for c in TABLES["plots"].columns
                              if c.name != "metrics")
    return sql.SQL("SELECT p.id, p.geom, {}, pm.metrics FROM plots p JOIN plot_metrics pm "
                   "ON pm.plot_id = p.id AND pm.run_id = {}").format(cols, sql.Literal(run_id))


def write_products(conn: psycopg.Connection, scan_id: int, directory: Path, *, run_id: str | None = None,
                   condition: sql.Composable | None = None) -> list[Path]:
    """Write the scan's products into `directory`: trees and crowns of `run_id` (or those
    matching `condition`, unqualified columns of trees/crowns), as GeoPackage (and trees
    as CSV); the plots with the run's metrics; the run's rasters. Returns the files."""
    if condition is None:
        condition = sql.SQL("run_id = {}").format(sql.Literal(run_id)) if run_id else sql.SQL("TRUE")
    where = sql.SQL("scan_id = {} AND {}").format(sql.Literal(scan_id), condition)
    files = []
    for collection, key in VECTOR_FILES:
        source = None
        if collection == "plots":
            if run_id is None:
                continue
            source = _plots_of_run(run_id)
        path = directory / f"{collection}.{FORMATS[key].extension}"
        write(conn, TABLES[collection], sql.SQL("TRUE") if source is not None else where, FORMATS[key], path,
              source=source)
        files.append(path)
    if run_id is not None:
        files += _copy_rasters(conn, run_id, directory)
    return files


def _copy_rasters(conn: psycopg.Connection, run_id: str, directory: Path) -> list[Path]:
    from ..tiles.catalog import resolve
    storage = storage_of(current_app.config["CANOPY_SETTINGS"])
    files = []
    for raster_id, kind, uri in conn.execute("SELECT id, kind, storage_uri FROM rasters WHERE run_id = %s "
                                             "ORDER BY id", (run_id,)).fetchall():
        where, key = resolve(uri, storage)
        path = directory / f"{kind}-{raster_id}.tif"
        with open(path, "wb") as fh:
            for chunk in where.read(key):
                fh.write(chunk)
        files.append(path)
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(run: dict, files: list[Path]) -> dict:
    """What a run's zip holds and how it was made."""
    return {"run": run["id"], "scan_id": run["scan_id"], "project_id": run["project_id"],
            "process": run["process_id"], "parameters": run["parameters"], "engine_version": run["engine_version"],
            "committed": run["created_at"].isoformat(),
            "crs": {"native_epsg": run["crs_epsg"], "native_wkt": run["crs_wkt"],
                    "vector_geometries": "EPSG:4326 (lon, lat); x and y columns in the native CRS",
                    "rasters": "the native CRS"},
            "files": [{"name": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p),
                       "media_type": _MEDIA.get(p.suffix.lstrip("."), "application/octet-stream")} for p in files]}


def run_zip(conn: psycopg.Connection, run: dict, directory: Path) -> Path:
    """Every product of `run` and its manifest.json, zipped into `directory`."""
    files_dir = directory / "files"
    files_dir.mkdir()
    files = write_products(conn, run["scan_id"], files_dir, run_id=run["id"])
    (files_dir / "manifest.json").write_text(json.dumps(manifest(run, files), indent=2))
    path = directory / f"scan-{run['scan_id']}-run-{run['id']}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for part in [files_dir / "manifest.json", *files]:
            zf.write(part, part.name, zipfile.ZIP_STORED if part.suffix == ".tif" else zipfile.ZIP_DEFLATED)
    return path


@bp.get("/scans/<id:scan_id>/runs/<run_id>/export")
def export_run(scan_id: int, run_id: str):
    """One run's products and manifest as a zip (404 for a run or scan the caller cannot see)."""
    if not RUN_ID.fullmatch(run_id):
        raise NotFound(f"no run {run_id!r} of scan {scan_id}")
    with get_pool().connection() as conn:
        row = conn.execute(
            "SELECT r.id, r.scan_id, r.project_id, r.process_id, r.parameters, r.engine_version, r.created_at, "
            "s.crs_epsg, s.crs_wkt FROM runs r JOIN scans s ON s.id = r.scan_id WHERE r.id = %s AND r.scan_id = %s",
            (run_id, scan_id)).fetchone()
        if row is None or not policy.can_read(policy.current(), row[2]):
            raise NotFound(f"no run {run_id!r} of scan {scan_id}")
        run = dict(zip(("id", "scan_id", "project_id", "process_id", "parameters", "engine_version", "created_at",
                        "crs_epsg", "crs_wkt"), row))
        return send_made(f"run-{run_id}", lambda folder: run_zip(conn, run, folder), "application/zip")
