"""Runs in PostGIS: recorded when a job commits its products, listed per scan, deleted
with their rows (and, by the caller, their files).

A run is a successful job that made products, named by its top-level job's id (a
fan-out's tiles commit under their parent, so all of a big scan's products are one
run). Its parameters are the job's inputs and its engine version is
`processes.lidar.version.ENGINE_VERSION`, both written at commit. The scan's current run
(`scans.current_run_id`) is its latest; what the collections show by default follows
`current_products` (db/runs.py). Functions here take the caller's connection so that
they join the caller's transaction (the job's commit, its dismissal).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from psycopg import Connection, sql
from psycopg.rows import dict_row

from processes.lidar.version import ENGINE_VERSION

PRODUCT_ARTIFACTS = ("raster", "trees", "plot_metrics")
_EXTENT_SOURCES = (("trees", "trees", "geom"), ("crowns", "crowns", "geom"), ("rasters", "rasters", "footprint"))


def run_id_of(job: dict) -> str:
    """The run a job's products belong to: its own id, or its fan-out parent's."""
    return job.get("parent_id") or job["id"]


def record(conn: Connection, run_id: str, artifacts: list[dict]) -> bool:
    """Create the run's row before its products are written (plot metrics refer to it).
    False when the job made no products or names no scan: its rows then carry no run."""
    if not any(a["kind"] in PRODUCT_ARTIFACTS for a in artifacts):
        return False
    top = conn.execute("SELECT process_id, inputs->'inputs' FROM jobs WHERE identifier = %s", (run_id,)).fetchone()
    if top is None:
        return False
    inputs = top[1] or {}
    scan_id = next((a["scan_id"] for a in artifacts if a.get("scan_id")), inputs.get("scan"))
    if scan_id is None:
        return False
    conn.execute("INSERT INTO runs (id, scan_id, project_id, process_id, parameters, engine_version) "
                 "SELECT %s, id, project_id, %s, %s, %s FROM scans WHERE id = %s "
                 "ON CONFLICT (id) DO UPDATE SET engine_version = EXCLUDED.engine_version, created_at = now()",
                 (run_id, top[0], json.dumps(inputs), ENGINE_VERSION, scan_id))
    return True


def products_of(artifacts: list[dict]) -> list[str]:
    """Product names of a run's artifacts: raster kinds, `trees` (with their crowns), `plot_metrics`."""
    names = set()
    for art in artifacts:
        if art["kind"] == "raster":
            names.add(art["raster_kind"])
        elif art["kind"] in ("trees", "plot_metrics"):
            names.add(art["kind"])
    return sorted(names)


def finish(conn: Connection, run_id: str, products: list[str]) -> None:
    """After the run's rows are written: its products, its extent per collection (from its
    own rows, through the run_id indexes) and the scan's current run."""
    extents: dict[str, list[float]] = {}
    for collection, table, geom in _EXTENT_SOURCES:
        row = conn.execute(sql.SQL("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                   "(SELECT ST_Extent({}) AS e FROM {} WHERE run_id = %s) t").format(
            sql.Identifier(geom), sql.Identifier(table)), (run_id,)).fetchone()
        if row[0] is not None:
            extents[collection] = list(row)
    row = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(p.geom) AS e "
                       "FROM plot_metrics m JOIN plots p ON p.id = m.plot_id WHERE m.run_id = %s) t",
                       (run_id,)).fetchone()
    if row[0] is not None:
        extents["plots"] = list(row)
    scan = conn.execute("UPDATE runs SET products = ARRAY(SELECT DISTINCT unnest(products || %s::text[]) ORDER BY 1), "
                        "extents = extents || %s::jsonb WHERE id = %s RETURNING scan_id",
                        (products, json.dumps(extents), run_id)).fetchone()
    if scan:
        conn.execute("UPDATE scans SET current_run_id = %s WHERE id = %s", (run_id, scan[0]))


def delete_run(conn: Connection, run_id: str) -> list[str]:
    """Remove a run's rows; returns the storage keys of its files (deleted by the caller
    once the transaction is committed). If it was its scan's current run, the latest
    remaining run becomes current; plots whose metrics came from it get their latest
    other run's metrics (or none)."""
    run = conn.execute("SELECT scan_id, created_at FROM runs WHERE id = %s FOR UPDATE", (run_id,)).fetchone()
    if run is None:
        return []
    scan_id, created = run
    keys = [r[0] for r in conn.execute("DELETE FROM rasters WHERE run_id = %s RETURNING storage_uri", (run_id,))]
    conn.execute("DELETE FROM trees WHERE run_id = %s", (run_id,))        # their crowns go with them
    conn.execute("DELETE FROM crowns WHERE run_id = %s", (run_id,))
    conn.execute("""
        UPDATE plots p SET version = version + 1, updated_at = now(), metrics = (
            SELECT m.metrics FROM plot_metrics m JOIN runs r ON r.id = m.run_id
            WHERE m.plot_id = p.id AND m.run_id <> %(run)s ORDER BY r.created_at DESC, r.id DESC LIMIT 1)
        WHERE p.id IN (SELECT plot_id FROM plot_metrics WHERE run_id = %(run)s)
          AND NOT EXISTS (SELECT 1 FROM plot_metrics m JOIN runs r ON r.id = m.run_id
                          WHERE m.plot_id = p.id AND m.run_id <> %(run)s AND r.created_at > %(created)s)""",
                 {"run": run_id, "created": created})
    conn.execute("DELETE FROM runs WHERE id = %s", (run_id,))             # and its plot_metrics
    conn.execute("UPDATE scans SET current_run_id = (SELECT id FROM runs WHERE scan_id = %(scan)s "
                 "ORDER BY created_at DESC, id DESC LIMIT 1) WHERE id = %(scan)s", {"scan": scan_id})
    return stored_keys(keys)


def busy_jobs(conn: Connection, scan_id: int) -> list[str]:
    """Jobs queued or running on the scan (its deletion waits for them)."""
    rows = conn.execute("SELECT identifier FROM jobs WHERE status IN ('accepted', 'running') "
                        "AND inputs->'inputs'->>'scan' = %s", (str(scan_id),)).fetchall()
    return [r[0] for r in rows]


def delete_scan(conn: Connection, scan_id: int) -> tuple[list[str], list[str]]:
    """Remove a scan with every run and row of it; returns the storage keys and key
    prefixes of its files (its point clouds and every run's products)."""
    keys: list[str] = []
    for (run_id,) in conn.execute("SELECT id FROM runs WHERE scan_id = %s ORDER BY created_at", (scan_id,)).fetchall():
        keys += delete_run(conn, run_id)
    keys += [r[0] for r in conn.execute("SELECT storage_uri FROM rasters WHERE scan_id = %s", (scan_id,))]
    keys += [r[0] for r in conn.execute("SELECT storage_uri FROM scan_files WHERE scan_id = %s", (scan_id,))]
    storage_uri = conn.execute("DELETE FROM scans WHERE id = %s RETURNING storage_uri", (scan_id,)).fetchone()
    if storage_uri and storage_uri[0]:
        keys.append(storage_uri[0])
    return stored_keys(keys), [f"rasters/scan-{scan_id}", f"scans/{scan_id}"]


def project_files(conn: Connection, project_id: int) -> tuple[list[str], list[str]]:
    """Storage keys and prefixes of everything a project's scans hold (for its deletion)."""
    scans = [r[0] for r in conn.execute("SELECT id FROM scans WHERE project_id = %s", (project_id,))]
    keys = [r[0] for r in conn.execute("SELECT storage_uri FROM rasters WHERE project_id = %s", (project_id,))]
    keys += [r[0] for r in conn.execute("SELECT f.storage_uri FROM scan_files f JOIN scans s ON s.id = f.scan_id "
                                        "WHERE s.project_id = %s", (project_id,))]
    prefixes = [p for s in scans for p in (f"rasters/scan-{s}", f"scans/{s}")]
    return stored_keys(keys), prefixes


def stored_keys(uris: list[str | None]) -> list[str]:
    """The storage keys among `uris`: absolute `file://` URIs name files Canopy does not own."""
    return sorted({u for u in uris if u and not urlparse(u).scheme})


def page(conn: Connection, scan_id: int, limit: int, before: tuple[datetime, str] | None,
         only: str | None = None) -> list[dict[str, Any]]:
    """The scan's runs (or its run `only`), newest first, with their job's times and their
    rasters (limit + 1 rows, to tell whether there is a next page)."""
    after = "AND (r.created_at, r.id) < (%(t)s, %(id)s)" if before else ""
    if only is not None:
        after += " AND r.id = %(only)s"
    rows = conn.cursor(row_factory=dict_row).execute(f"""
        SELECT r.id, r.scan_id, r.process_id, r.parameters, r.engine_version, r.products, r.extents,
               r.created_at AS committed, j.created, j.job_start_datetime AS started, j.status AS job_status,
               s.current_run_id = r.id AS current,
               ARRAY(SELECT c.product FROM current_products c WHERE c.run_id = r.id ORDER BY 1) AS shown,
               coalesce((SELECT json_agg(json_build_object('id', x.id, 'kind', x.kind) ORDER BY x.id)
                         FROM rasters x WHERE x.run_id = r.id), '[]'::json) AS rasters
        FROM runs r JOIN scans s ON s.id = r.scan_id LEFT JOIN jobs j ON j.identifier = r.id
        WHERE r.scan_id = %(scan)s {after}
        ORDER BY r.created_at DESC, r.id DESC LIMIT %(limit)s""",
        {"scan": scan_id, "limit": limit + 1, "t": before[0] if before else None,
         "id": before[1] if before else None, "only": only}).fetchall()
    return rows
