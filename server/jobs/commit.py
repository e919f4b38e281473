"""Committing a job's outcome in one step: files published to storage and every row
(rasters, trees, crowns, plot metrics, scan facts, the job's own state) written in
one transaction. A job that makes products is a *run* (server/runs): its rows carry
the run's id (the top-level job's), nothing of an earlier run is touched, and the new
run becomes its scan's current run; committing one run twice leaves one result. A
tile's success settles its fan-out parent in that same transaction (store.settle_parent).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from psycopg import Connection

from db.pool import get_pool
from processes.base import Outcome

from ..area_models import store as area_models
from ..runs import store as runs
from . import store

log = logging.getLogger("canopy.jobs")


class Superseded(Exception):
    """The job stopped running this attempt (dismissed, or requeued by the reaper) before
    its outcome was committed."""


def _raster_key(art: dict, job: dict, attempt: int) -> str:
    return f"rasters/scan-{art['scan_id']}/{art['raster_kind']}-{job['id']}-{attempt}.tif"


def _publish_files(outcome: Outcome, ctx, job: dict) -> list[str]:
    """Publish raster files from the work directory at their final keys (a local
    directory: atomic renames; S3: uploads); returns the keys so a failed commit can
    delete them. Keys are unique per attempt of a job, so nothing published here
    replaces a file another commit refers to, nor one another attempt published."""
    published = []
    try:
        for art in outcome.artifacts:
            if art["kind"] != "raster":
                continue
            key = _raster_key(art, job, job["attempts"])
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
    run_id = runs.run_id_of(job)
    published = _publish_files(outcome, ctx, job)
    replaced: list[str] = []
    try:
        with get_pool().connection() as conn, conn.transaction():
            kept = runs.record(conn, run_id, outcome.artifacts)
            owner = {**job, "run_id": run_id if kept else None}
            for art in outcome.artifacts:
                replaced += _WRITERS[art["kind"]](conn, art, owner)
            if kept:
                runs.finish(conn, run_id, runs.products_of(outcome.artifacts))
            results = _results(conn, outcome, owner)
            parent_id = store.lock_parent(conn, job_id)
            row = conn.execute("UPDATE jobs SET status = 'successful', progress = 100, message = 'done', "
                               "results = %s, updated = now(), job_end_datetime = now(), mimetype = "
                               "'application/json' WHERE identifier = %s AND status = 'running' AND attempts = %s "
                               "RETURNING 1", (json.dumps(results), job_id, job["attempts"])).fetchone()
            if row is None:
                raise Superseded(f"job {job_id} no longer runs attempt {job['attempts']}")
            changes = store.settle_parent(conn, parent_id)
    except BaseException:
        _delete(ctx, published)
        raise
    # files of outputs this commit replaced, and those of earlier attempts killed between
    # publishing and committing (they can commit no more: the job ran this attempt)
    earlier = [_raster_key(art, job, n) for art in outcome.artifacts if art["kind"] == "raster"
               for n in range(1, job["attempts"])]
    _delete(ctx, replaced + earlier)
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
    run = job.get("run_id")
    run_query = f"&run={run}" if run else ""
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
                                "href": f"{base}/collections/trees/items?scan_id={scan}{run_query}"}
            results["crowns"] = {"type": "application/geo+json",
                                 "href": f"{base}/collections/crowns/items?scan_id={scan}{run_query}"}
        elif art["kind"] == "plot_metrics":
            results["plots"] = [{"id": pid, "href": f"{base}/collections/plots/items/{pid}"}
                                for pid in art["values"]]
        elif art["kind"] == "area_model":
            results["models"] = area_models.results(art)
        elif art["kind"] == "scan":
            results["scan"] = {"id": art["scan_id"], "href": f"{base}/collections/scans/items/{art['scan_id']}"}
    if run:
        scan = conn.execute("SELECT scan_id FROM runs WHERE id = %s", (run,)).fetchone()[0]
        results["run"] = {"id": run, "type": "application/json", "href": f"{base}/scans/{scan}/runs/{run}"}
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
    """A raster of the run; one of its kind per run (a second commit of the run replaces it)."""
    old = conn.execute("DELETE FROM rasters WHERE run_id = %s AND kind = %s RETURNING storage_uri",
                       (job["run_id"], art["raster_kind"])).fetchall() if job.get("run_id") else []
    art["raster_id"] = conn.execute(
        "INSERT INTO rasters (scan_id, project_id, kind, storage_uri, crs_epsg, resolution_m, footprint, bands, stats, "
        "run_id) VALUES (%s, %s, %s, %s, %s, %s, ST_GeomFromText(%s, 4326), %s, %s, %s) RETURNING id",
        (art["scan_id"], job["project_id"], art["raster_kind"], art["storage_uri"], art.get("crs_epsg"),
         art.get("resolution_m"), art.get("footprint_wkt4326"), json.dumps(art.get("bands")),
         json.dumps(art.get("stats")), job.get("run_id"))).fetchone()[0]
    return [r[0] for r in old if r[0] != art["storage_uri"]]


def _trees(conn: Connection, art: dict, job: dict) -> list[str]:
    """Trees and their crowns of a scan in the run (earlier runs keep theirs), bulk-loaded with COPY."""
    scan, project, run = art["scan_id"], job["project_id"], job.get("run_id")
    if run:                                  # a second commit of the same run replaces its first
        conn.execute("DELETE FROM trees WHERE run_id = %s", (run,))
        conn.execute("DELETE FROM crowns WHERE run_id = %s", (run,))
    trees: list[dict[str, Any]] = art["trees"]
    if not trees:
        art["count"] = 0
        return []
    first = conn.execute("SELECT nextval(pg_get_serial_sequence('trees', 'id')) FROM generate_series(1, %s)",
                         (len(trees),)).fetchall()
    ids = [r[0] for r in first]
    with conn.cursor().copy("COPY trees (id, scan_id, project_id, geom, x, y, height_m, crown_area_m2, "
                            "crown_diameter_m, apex_height_m, run_id) FROM STDIN") as copy:
        for tid, t in zip(ids, trees):
            copy.write_row((tid, scan, project, f"SRID=4326;POINT({t['lon']} {t['lat']})", t["x"], t["y"],
                            t["height"], t.get("crown_area"), t.get("crown_diameter"), t.get("apex_height"), run))
    with conn.cursor().copy("COPY crowns (tree_id, scan_id, project_id, geom, area_m2, run_id) FROM STDIN") as copy:
        for tid, t in zip(ids, trees):
            if t.get("crown_wkt4326"):
                copy.write_row((tid, scan, project, f"SRID=4326;{t['crown_wkt4326']}", t.get("crown_area"), run))
    art["count"] = len(trees)
    return []


def _plot_metrics(conn: Connection, art: dict, job: dict) -> list[str]:
    """Each plot's metrics in the run (plot_metrics) and on the plot (the latest run's)."""
    for plot_id, metrics in art["values"].items():
        if job.get("run_id"):
            conn.execute("INSERT INTO plot_metrics (run_id, plot_id, metrics) VALUES (%s, %s, %s) "
                         "ON CONFLICT (run_id, plot_id) DO UPDATE SET metrics = EXCLUDED.metrics",
                         (job["run_id"], plot_id, json.dumps(metrics)))
        conn.execute("UPDATE plots SET metrics = %s, version = version + 1, updated_at = now() WHERE id = %s",
                     (json.dumps(metrics), plot_id))
    return []


_WRITERS = {"scan": _scan, "raster": _raster, "trees": _trees, "plot_metrics": _plot_metrics,
            "area_model": area_models.write}
