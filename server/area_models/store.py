"""Area models in PostGIS: written by a fit-area-model job's commit, read by the
predict-area-model jobs and by /area-models. Functions take the caller's connection
so that they join its transaction."""

from __future__ import annotations

import json
from typing import Any

from psycopg import Connection, sql
from psycopg.rows import dict_row

from db.access import Principal, visible_projects

COLUMNS = ("id", "project_id", "scan_id", "run_id", "job_id", "attribute", "unit", "method", "metrics",
           "resolution_m", "parameters", "validation", "plots", "created_at")


def write(conn: Connection, art: dict, job: dict) -> list[str]:
    """The commit's writer for an `area_model` artifact: one row per fitted attribute."""
    for m in art["models"]:
        m["id"] = conn.execute(
            "INSERT INTO area_models (project_id, scan_id, run_id, job_id, attribute, unit, method, metrics, "
            "resolution_m, parameters, validation, plots, model) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (job["project_id"], art["scan_id"], art.get("run_id"), job["id"], m["attribute"], m.get("unit"),
             m["method"], m["metrics"], m["resolution_m"], json.dumps(m["parameters"]), json.dumps(m["validation"]),
             art["plots"], m.get("blob"))).fetchone()[0]
    return []


def results(art: dict) -> list[dict]:
    """The committed models as a job's results list them (links relative to the API root)."""
    return [{"id": m["id"], "attribute": m["attribute"], "unit": m.get("unit"), "method": m["method"],
             "metrics": m["metrics"], "resolution_m": m["resolution_m"],
             "validation": {k: m["validation"][k] for k in ("scheme", "rmse", "rmse_pct", "bias", "bias_pct", "r2",
                                                             "baseline_rmse_pct")},
             "href": f"/area-models/{m['id']}"} for m in art["models"]]


def get(conn: Connection, model_id: int, with_blob: bool = False) -> dict[str, Any] | None:
    cols = ", ".join(COLUMNS + (("model",) if with_blob else ()))
    return conn.cursor(row_factory=dict_row).execute(f"SELECT {cols} FROM area_models WHERE id = %s",
                                                     (model_id,)).fetchone()


def page(conn: Connection, principal: Principal | None, limit: int, after: int | None, project: int | None,
         scan: int | None) -> list[dict[str, Any]]:
    """Models the caller may read, newest first (limit + 1 rows: is there a next page)."""
    where = [visible_projects(principal)]
    args: dict[str, Any] = {"limit": limit + 1}
    if after is not None:
        where.append(sql.SQL("id < %(after)s"))
        args["after"] = after
    if project is not None:
        where.append(sql.SQL("project_id = %(project)s"))
        args["project"] = project
    if scan is not None:
        where.append(sql.SQL("scan_id = %(scan)s"))
        args["scan"] = scan
    query = sql.SQL("SELECT {} FROM area_models WHERE {} ORDER BY id DESC LIMIT %(limit)s").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), sql.SQL(" AND ").join(where))
    return conn.cursor(row_factory=dict_row).execute(query, args).fetchall()


def plot_records(conn: Connection, scan_id: int, crs_epsg: int, project_id: int,
                 plot_ids: list[int] | None) -> list[dict[str, Any]]:
    """The plots a fit reads: attributes, metrics, area (m², on the ellipsoid) and whether
    the scan's footprint covers them. Without ids: the plots that intersect the scan."""
    cond = "p.id = ANY(%(ids)s) AND p.project_id = %(project)s" if plot_ids else \
        "p.project_id = %(project)s AND ST_Intersects(p.geom, s.footprint)"
    rows = conn.cursor(row_factory=dict_row).execute(
        f"SELECT p.id, p.attributes, p.metrics, ST_Area(p.geom::geography) AS area_m2, "
        f"coalesce(ST_CoveredBy(p.geom, ST_Buffer(s.footprint, 1e-7)), false) AS covered "
        f"FROM plots p JOIN scans s ON s.id = %(scan)s WHERE {cond} ORDER BY p.id",
        {"ids": plot_ids, "project": project_id, "scan": scan_id}).fetchall()
    return rows


def grid_metrics(conn: Connection, scan_id: int) -> list[dict[str, Any]]:
    """The scan's grid-metrics rasters, newest first (storage key, cell size, run)."""
    return conn.cursor(row_factory=dict_row).execute(
        "SELECT id, storage_uri, resolution_m, run_id, bands FROM rasters WHERE scan_id = %s AND kind = 'metrics' "
        "ORDER BY created_at DESC, id DESC", (scan_id,)).fetchall()
