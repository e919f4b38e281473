"""The JobContext a process runs with on a worker (see processes/base.py)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from processes.base import PlotInput, ProcessInputError, RunInput, ScanInput, WaitForChildren

from db.pool import get_pool

from ..settings import Settings
from ..storage import storage_of
from ..workspace import workspace_of
from . import events, store

_MIN_INTERVAL = 0.5     # seconds between progress writes (the last one always goes out)


class WorkerContext:
    def __init__(self, job: dict, settings: Settings, dismissed: threading.Event, dismissed_error: type):
        self.job = job
        self.job_id = job["id"]
        self.storage = storage_of(settings)
        self.workdir = workspace_of(settings).job_dir(self.job_id)   # scratch, on this machine
        self.parts_key = parts_prefix(job["parent_id"] or self.job_id)   # shared by a job and its children
        self._dismissed = dismissed
        self._dismissed_error = dismissed_error
        self._last = (0.0, -1)

    def progress(self, percent: float, message: str) -> None:
        if self._dismissed.is_set():
            raise self._dismissed_error(f"job {self.job_id} was dismissed")
        pct = max(0, min(99, int(percent)))        # 100 is written by the commit
        now = time.monotonic()
        if now - self._last[0] < _MIN_INTERVAL and pct == self._last[1]:
            return
        self._last = (now, pct)
        state = store.progress(self.job_id, self.job["attempts"], pct, message)
        if state is None:                             # no longer running this attempt: dismissed or reaped
            raise self._dismissed_error(f"job {self.job_id} was dismissed")
        events.publish(self.job_id, "running", pct, message)
        if self.job["parent_id"]:
            parent = store.parent_progress(self.job["parent_id"])
            if parent:
                events.publish(self.job["parent_id"], "running", parent["progress"], parent["message"])

    def fan_out(self, process_id: str, children: list[dict]) -> list[dict]:
        existing = store.children(self.job_id)
        if not existing:
            from .queue import push, task_for
            ids = [store.new_id() for _ in children]
            tasks = [task_for(job_id) for job_id in ids]
            store.create_children(self.job, process_id, children, ids, [t.id for t in tasks])
            for task in tasks:
                push(task)
            raise WaitForChildren(len(ids))
        failed = [c for c in existing if c["status"] in ("failed", "dismissed")]
        if failed:
            raise ProcessInputError(f"tile {failed[0]['tile_index']} {failed[0]['status']}: {failed[0]['message']}")
        if any(c["status"] != "successful" for c in existing):
            raise WaitForChildren(len(existing))
        return [c["results"] for c in existing]

    def scan(self, scan_id: int) -> ScanInput:
        with get_pool().connection() as conn:
            row = conn.execute("SELECT id, project_id, crs_epsg, status, crs_override, first_returns_m2 FROM scans "
                               "WHERE id = %s",
                               (scan_id,)).fetchone()
            files = conn.execute("SELECT storage_uri FROM scan_files WHERE scan_id = %s ORDER BY id",
                                 (scan_id,)).fetchall()
        if row is None or row[1] != self.job["project_id"]:
            raise ProcessInputError(f"scan {scan_id} does not exist in this job's project")
        if not files:
            raise ProcessInputError(f"scan {scan_id} has no files yet (status {row[3]})")
        return ScanInput(id=row[0], project_id=row[1], files=[self.storage.fetch(f[0]) for f in files],
                         crs=row[4], crs_epsg=row[2], first_density=row[5])

    def run(self, run_id: str) -> RunInput:
        """A run of this job's project, or of one its owner may read (checked again here:
        access may have changed since the job was queued); its CHM and trees."""
        import numpy as np
        from psycopg import sql

        from db.access import Principal, visible_projects

        with get_pool().connection() as conn:
            row = conn.execute("SELECT r.scan_id, r.project_id, r.process_id, u.role FROM runs r "
                               "LEFT JOIN users u ON u.id = %s WHERE r.id = %s",
                               (self.job["owner_id"], run_id)).fetchone()
            readable = row is not None and row[1] == self.job["project_id"]
            if row is not None and not readable and row[3] is not None:
                rule = visible_projects(Principal(self.job["owner_id"], row[3]), column="id")
                readable = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM projects WHERE id = {} AND {})").format(
                    sql.Literal(row[1]), rule)).fetchone()[0]
            if not readable:
                raise ProcessInputError(f"no run {run_id!r} (a successful job's id) that this job may read")
            chm = conn.execute("SELECT storage_uri FROM rasters WHERE run_id = %s AND kind = 'chm' "
                               "ORDER BY id DESC LIMIT 1", (run_id,)).fetchone()
            trees = conn.execute("SELECT x, y, height_m, crown_diameter_m FROM trees WHERE run_id = %s ORDER BY id",
                                 (run_id,)).fetchall()
        cols = np.array(trees, dtype=float).reshape(-1, 4)
        return RunInput(id=run_id, scan_id=row[0], project_id=row[1], process_id=row[2],
                        chm=self.storage.fetch(chm[0]) if chm else None,
                        trees={k: cols[:, i] for i, k in enumerate(("x", "y", "height", "crown_diameter"))})

    def plots(self, scan: ScanInput, plot_ids: list[int] | None) -> list[PlotInput]:
        if scan.crs_epsg is None:
            if not plot_ids:
                return []             # not ingested: no footprint, so no plot is known to intersect it
            raise ProcessInputError(f"scan {scan.id} has no known CRS; ingest it first")
        with get_pool().connection() as conn:
            if plot_ids:
                rows = conn.execute("SELECT id, ST_AsText(ST_Transform(geom, %s)) FROM plots "
                                    "WHERE id = ANY(%s) AND project_id = %s ORDER BY id",
                                    (scan.crs_epsg, plot_ids, scan.project_id)).fetchall()
                missing = set(plot_ids) - {r[0] for r in rows}
                if missing:
                    raise ProcessInputError(f"plots {sorted(missing)} are not in the scan's project")
            else:
                rows = conn.execute("SELECT p.id, ST_AsText(ST_Transform(p.geom, %s)) FROM plots p "
                                    "JOIN scans s ON s.id = %s WHERE p.project_id = s.project_id "
                                    "AND ST_Intersects(p.geom, s.footprint) ORDER BY p.id",
                                    (scan.crs_epsg, scan.id)).fetchall()
        return [PlotInput(id=r[0], geometry_wkt=r[1]) for r in rows]

    def plot_records(self, scan: ScanInput, plot_ids: list[int] | None) -> list[dict]:
        """Plots with their attributes, metrics, area and coverage by the scan (area models)."""
        from ..area_models import store as area_models
        if plot_ids:
            self.plots(scan, plot_ids)               # every id must be in the scan's project
        with get_pool().connection() as conn:
            return area_models.plot_records(conn, scan.id, scan.crs_epsg, scan.project_id, plot_ids)

    def footprint(self, scan: ScanInput) -> str | None:
        if scan.crs_epsg is None:
            return None
        with get_pool().connection() as conn:
            row = conn.execute("SELECT ST_AsText(ST_Transform(footprint, %s)) FROM scans WHERE id = %s",
                               (scan.crs_epsg, scan.id)).fetchone()
        return row[0] if row else None

    def area_model(self, model_id: int) -> dict:
        """A stored area model of this job's project, with its serialised model."""
        from ..area_models import store as area_models
        with get_pool().connection() as conn:
            row = area_models.get(conn, model_id, with_blob=True)
        if row is None or row["project_id"] != self.job["project_id"]:
            raise ProcessInputError(f"no area model {model_id} in this job's project")
        return row

    def grid_metrics(self, scan: ScanInput) -> list[dict]:
        """The scan's grid-metrics rasters, newest first, each with `path` (a local file)."""
        from ..area_models import store as area_models
        with get_pool().connection() as conn:
            rows = area_models.grid_metrics(conn, scan.id)
        return [{**r, "path": self.storage.fetch(r["storage_uri"])} for r in rows]

    def share_part(self, path: Path, name: str) -> None:
        self.storage.publish(f"{self.parts_key}/{name}", path)

    def part(self, name: str) -> Path:
        return self.storage.fetch(f"{self.parts_key}/{name}")

    def cleanup(self, final: bool = True) -> None:
        """Remove the work directory; a parent that reached a final state also removes
        the parts its children shared."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        if final and not self.job["parent_id"]:
            self.storage.delete_prefix(self.parts_key)


def parts_prefix(root_job_id: str) -> str:
    """Where a fan-out's tiles share their parts in the object store (removed when the
    parent reaches a final state)."""
    return f"tmp/fanout/{root_job_id}"
