"""Committing a job's outcome in one step: files published to storage and every row
(rasters, trees, crowns, plot metrics, scan facts, the job's own state) written in
one transaction. A re-run replaces the outputs of the same kind for the same scan,
so running a job twice leaves one result, never two. A tile's success settles its
fan-out parent in that same transaction (store.settle_parent).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from psycopg import Connection

from db.pool import get_pool
from processes.base import Outcome

from . import store

log = logging.getLogger("canopy.jobs")


class Superseded(Exception):
    """The job stopped being `running` (dismissed) before its outcome was committed."""


def _publish_files(outcome: Outcome, ctx, job_id: str) -> list[str]:
    """Publish raster files from the work directory at their final keys (a local
    directory: atomic renames; S3: uploads); returns the keys so a failed commit can
    delete them. Keys are unique per job, so nothing published here replaces a file
    another commit refers to."""
    published = []
    try:
        for art in outcome.artifacts:
            if art["kind"] != "raster":
                continue
            key = f"rasters/scan-{art['scan_id']}/{art['raster_kind']}-{job_id}.tif"
            ctx.storage.publish(key, Path(art["path"]))
            art["storage_uri"] = key
            published.append(key)
    except BaseException:
        _delete(ctx, published)
        raise
    return published


def _delete(ctx, keys: list[str]) -> None:
    for key in keys:
        try:
            ctx.storage.delete(key)
        except Exception:  # cleanup must not hide the error that caused it
            log.warning("could not delete %s from storage", key, exc_info=True)


def commit(job: dict, outcome: Outcome, ctx) -> tuple[dict, store.Changes]:
    """Publish and record the outcome; returns the job's results and what follows for
    its parent (store.Changes)."""
    job_id = job["id"]
    published = _publish_files(outcome, ctx, job_id)
    replaced: list[str] = []
    try:
        with get_pool().connection() as conn, conn.transaction():
            for art in outcome.artifacts:
                replaced += _WRITERS[art["kind"]](conn, art, job)
            results = _results(conn, outcome, job)
            parent_id = store.lock_parent(conn, job_id)
            row = conn.execute("UPDATE jobs SET status = 'successful', progress = 100, message = 'done', "
                               "results = %s, updated = now(), job_end_datetime = now(), mimetype = "
                               "'application/json' WHERE identifier = %s AND status = 'running' RETURNING 1",
                               (json.dumps(results), job_id)).fetchone()
            if row is None:
                raise Superseded(f"job {job_id} is no longer running")
            changes = store.settle_parent(conn, parent_id)
    except BaseException:
        _delete(ctx, published)
        raise
    _delete(ctx, replaced)                   # files of outputs this commit replaced
    return results, changes


def apply(artifacts: list[dict], job: dict) -> None:
    """Write row artifacts outside a job's commit (failure records)."""
    with get_pool().connection() as conn, conn.transaction():
        for art in artifacts:
            _WRITERS[art["kind"]](conn, art, job)


def _results(conn: Connection, outcome: Outcome, job: dict) -> dict:
    """The outputs, with links to what was committed (collections, tiles, COGs). Links are
    stored relative to the API root and made absolute when served (views.absolute_links)."""
    base = ""
    results = dict(outcome.outputs)
    for art in outcome.artifacts:
        if art["kind"] == "raster":
            rid = art["raster_id"]
            results[art["raster_kind"]] = {"id": rid, "href": f"{base}/rasters/{rid}/cog",
                                           "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                                           "tilejson": f"{base}/rasters/{rid}/tilejson.json",
                                           "feature": f"{base}/collections/rasters/items/{rid}"}
        elif art["kind"] == "trees":
            scan = art["scan_id"]
            results["trees"] = {"count": art["count"], "type": "application/geo+json",
                                "href": f"{base}/collections/trees/items?scan_id={scan}"}
            results["crowns"] = {"type": "application/geo+json",
                                 "href": f"{base}/collections/crowns/items?scan_id={scan}"}
        elif art["kind"] == "plot_metrics":
            results["plots"] = [{"id": pid, "href": f"{base}/collections/plots/items/{pid}"}
                                for pid in art["values"]]
        elif art["kind"] == "scan":
            results["scan"] = {"id": art["scan_id"], "href": f"{base}/collections/scans/items/{art['scan_id']}"}
    return results


def _scan(conn: Connection, art: dict, job: dict) -> list[str]:
    values = dict(art["values"])
    footprint = values.pop("footprint_wkt4326", None)
    cols = ", ".join(f"{k} = %s" for k in values)
    # an ingestion that saw fewer files than the scan has now (a tile arrived meanwhile)
    # leaves the scan to the ingestion queued by that tile
    files = art.get("file_count")
    conn.execute(f"UPDATE scans SET {cols}, footprint = coalesce(ST_GeomFromText(%s, 4326), footprint) "
                 f"WHERE id = %s AND (%s::int IS NULL OR (SELECT count(*) FROM scan_files WHERE scan_id = %s) = %s)",
                 (*values.values(), footprint, art["scan_id"], files, art["scan_id"], files))
    return []


def _raster(conn: Connection, art: dict, job: dict) -> list[str]:
    old = conn.execute("DELETE FROM rasters WHERE scan_id = %s AND kind = %s RETURNING storage_uri",
                       (art["scan_id"], art["raster_kind"])).fetchall()
    art["raster_id"] = conn.execute(
        "INSERT INTO rasters (scan_id, project_id, kind, storage_uri, crs_epsg, resolution_m, footprint, bands, stats) "
        "VALUES (%s, %s, %s, %s, %s, %s, ST_GeomFromText(%s, 4326), %s, %s) RETURNING id",
        (art["scan_id"], job["project_id"], art["raster_kind"], art["storage_uri"], art.get("crs_epsg"),
         art.get("resolution_m"), art.get("footprint_wkt4326"), json.dumps(art.get("bands")),
         json.dumps(art.get("stats")))).fetchone()[0]
    return [r[0] for r in old if r[0] != art["storage_uri"]]


def _trees(conn: Connection, art: dict, job: dict) -> list[str]:
    """Trees and their crowns of a scan (replacing earlier ones), bulk-loaded with COPY."""
    scan, project = art["scan_id"], job["project_id"]
    conn.execute("DELETE FROM crowns WHERE scan_id = %s", (scan,))
    conn.execute("DELETE FROM trees WHERE scan_id = %s", (scan,))
    trees: list[dict[str, Any]] = art["trees"]
    if not trees:
        art["count"] = 0
        return []
    first = conn.execute("SELECT nextval(pg_get_serial_sequence('trees', 'id')) FROM generate_series(1, %s)",
                         (len(trees),)).fetchall()
    ids = [r[0] for r in first]
    with conn.cursor().copy("COPY trees (id, scan_id, project_id, geom, x, y, height_m, crown_area_m2, "
                            "crown_diameter_m, apex_height_m) FROM STDIN") as copy:
        for tid, t in zip(ids, trees):
            copy.write_row((tid, scan, project, f"SRID=4326;POINT({t['lon']} {t['lat']})", t["x"], t["y"],
                            t["height"], t.get("crown_area"), t.get("crown_diameter"), t.get("apex_height")))
    with conn.cursor().copy("COPY crowns (tree_id, scan_id, project_id, geom, area_m2) FROM STDIN") as copy:
        for tid, t in zip(ids, trees):
            if t.get("crown_wkt4326"):
                copy.write_row((tid, scan, project, f"SRID=4326;{t['crown_wkt4326']}", t.get("crown_area")))
    art["count"] = len(trees)
    return []


def _plot_metrics(conn: Connection, art: dict, job: dict) -> list[str]:
    for plot_id, metrics in art["values"].items():
        conn.execute("UPDATE plots SET metrics = %s, version = version + 1, updated_at = now() WHERE id = %s",
                     (json.dumps(metrics), plot_id))
    return []


_WRITERS = {"scan": _scan, "raster": _raster, "trees": _trees, "plot_metrics": _plot_metrics}
