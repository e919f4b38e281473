"""The demo forest `make run` loads: one public project in a real place (Malcolm Knapp
Research Forest, British Columbia) with six plots and a scan that has its file.

The scan is simulated (processes/lidar/synthetic.py: a 300 m square of open conifer
forest at ~10 pulses/m² in BC Albers, EPSG:3005, written as LAZ), published to the
storage as an upload's file is, and then taken through the real job system: an
`ingest-scan` job, then `forest-inventory`, both run by the Huey worker `make run`
starts, so the first screen shows a CHM, a DTM, trees, crowns and plot metrics.
Every step looks at what is already there first: a second run changes nothing, and
a run interrupted half-way is completed (`next_job` picks up where it stopped)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg

PROJECT = "Demo forest (Malcolm Knapp Research Forest)"
SCAN = "MKRF synthetic scan 2024"
_CENTER = (-122.573, 49.2825)   # lon, lat
EPSG = 3005                     # BC Albers, the province's projected CRS
SIZE_M = 300.0                  # side of the simulated square
DENSITY = 10.0                  # pulses per m² (returns: ~1.5 times more)
SEED = 16
# plot centres (m east, m north of the scan's centre): inside the scan, clear of its edges
_PLOT_OFFSETS = [(-90, -60), (0, -60), (90, -60), (-90, 60), (0, 60), (90, 60)]
_PLOT_HALF_M = 11.28            # 22.56 m squares: 509 m², the area of a 12.73 m radius plot


def origin() -> tuple[float, float]:
    """South-west corner of the simulated scan in EPSG:3005 (whole metres)."""
    from pyproj import Transformer
    x, y = Transformer.from_crs(4326, EPSG, always_xy=True).transform(*_CENTER)
    return float(round(x) - SIZE_M / 2), float(round(y) - SIZE_M / 2)


def _plot_geometry(dx: float, dy: float) -> dict:
    """A square plot `dx`, `dy` metres from the scan's centre, as a CRS84 MultiPolygon."""
    from pyproj import Transformer
    ox, oy = origin()
    cx, cy = ox + SIZE_M / 2 + dx, oy + SIZE_M / 2 + dy
    h = _PLOT_HALF_M
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    ring = [list(to_ll.transform(x, y)) for x, y in ((cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h),
                                                     (cx - h, cy + h), (cx - h, cy - h))]
    return {"type": "MultiPolygon", "coordinates": [[ring]]}


def load_demo(database_url: str) -> str:
    """The demo project and its plots (inside the scan), once; a record-only demo scan
    of an earlier version (a row without a file) is removed, and plots an earlier version
    placed outside the scan are moved into it. Later calls change nothing."""
    stands = ["Douglas-fir", "Western hemlock", "Western redcedar", "Mixed", "Red alder", "Douglas-fir"]
    done = []
    with psycopg.connect(database_url) as conn, conn.transaction():
        row = conn.execute("SELECT id FROM projects WHERE name = %s", (PROJECT,)).fetchone()
        if row:
            project_id = row[0]
        else:
            admin = conn.execute("SELECT id FROM users WHERE role = 'admin' ORDER BY id LIMIT 1").fetchone()
            project_id = conn.execute(
                "INSERT INTO projects (name, visibility, created_by) VALUES (%s, 'public', %s) RETURNING id",
                (PROJECT, admin[0] if admin else None)).fetchone()[0]
            done.append(f"project {project_id}")
        gone = conn.execute("DELETE FROM scans s WHERE project_id = %s AND NOT EXISTS "
                            "(SELECT 1 FROM scan_files f WHERE f.scan_id = s.id) AND status <> 'uploading' "
                            "RETURNING id", (project_id,)).fetchall()
        if gone:
            done.append(f"record-only scan {', '.join(str(g[0]) for g in gone)} removed")
        for i, (species, (dx, dy)) in enumerate(zip(stands, _PLOT_OFFSETS)):
            name, geom = f"MKRF plot {i + 1}", json.dumps(_plot_geometry(dx, dy))
            moved = conn.execute("UPDATE plots SET geom = ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326) "
                                 "WHERE project_id = %s AND name = %s AND NOT ST_Equals(geom, "
                                 "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)) RETURNING id",
                                 (geom, project_id, name, geom)).fetchall()
            exists = moved or conn.execute("SELECT 1 FROM plots WHERE project_id = %s AND name = %s",
                                           (project_id, name)).fetchone()
            if moved:
                done.append(f"{name} moved into the scan")
            if not exists:
                conn.execute(
                    "INSERT INTO plots (project_id, name, geom, attributes) "
                    "VALUES (%s, %s, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), %s)",
                    (project_id, name, geom,
                     json.dumps({"stand": species, "plot_area_m2": 509.0, "established": 2018 + i % 3})))
                done.append(name)
    return f"demo: {', '.join(done)} loaded" if done else "demo: project and plots already loaded"


def _simulate(path: Path) -> Path:
    """The demo scan as a LAZ file at `path` (1.3 M points, 6.4 MB; 20 to 70 s on 2 cores)."""
    from processes.lidar.synthetic import make_forest, write_las
    points, _ = make_forest("open", size=SIZE_M, seed=SEED, density=DENSITY, shrubs=0.005, origin=origin())
    return write_las(path, points, crs=f"EPSG:{EPSG}", version="1.4", point_format=6)


def ensure_scan(settings, log=print) -> int:
    """The demo scan's id; when it has no file yet, the file is simulated in the
    workspace, checked and published to the storage, and the scan and its file row are
    recorded together, as a completed upload leaves them (server/uploads/complete.py)."""
    with psycopg.connect(settings.database_url) as conn:
        project_id = conn.execute("SELECT id FROM projects WHERE name = %s", (PROJECT,)).fetchone()[0]
        row = conn.execute("SELECT s.id FROM scans s WHERE s.project_id = %s AND s.name = %s AND EXISTS "
                           "(SELECT 1 FROM scan_files f WHERE f.scan_id = s.id) ORDER BY s.id LIMIT 1",
                           (project_id, SCAN)).fetchone()
    if row:
        return row[0]
    from processes.lidar.validate import inspect

    from .storage import storage_of
    from .uploads.complete import sha256_of
    from .workspace import workspace_of

    scratch = workspace_of(settings).root / "demo"
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "mkrf-demo.laz"
    log(f"demo: simulating a {SIZE_M:.0f} m square of forest at {DENSITY:.0f} pulses/m² (20 to 70 s)")
    started = time.monotonic()
    _simulate(path)
    facts = inspect(path)
    digest, size = sha256_of(path), path.stat().st_size
    log(f"demo: {facts['point_count']:,} points, {size / 1e6:.1f} MB written in {time.monotonic() - started:.0f} s")
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        scan_id = conn.execute(
            "INSERT INTO scans (project_id, name, status, sha256, size_bytes, acquired_at) "
            "VALUES (%s, %s, 'uploaded', %s, %s, '2024-07-15T18:00:00Z') RETURNING id",
            (project_id, SCAN, digest, size)).fetchone()[0]
        key = f"scans/{scan_id}/mkrf-demo.laz"
        storage_of(settings).publish(key, path)
        conn.execute("INSERT INTO scan_files (scan_id, storage_uri, filename, size_bytes, sha256, point_count, "
                     "bounds_native) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     (scan_id, key, "mkrf-demo.laz", size, digest, facts["point_count"],
                      [float(v) for v in facts["bounds"]]))
    return scan_id


def next_job(settings, scan_id: int) -> tuple[str, str] | None:
    """(job id, process id) of the demo job to wait for — the running or queued one, or a
    new one queued now: `ingest-scan` until the scan is ready, then `forest-inventory`.
    None when the demo's inventory has succeeded (the demo is complete)."""
    with psycopg.connect(settings.database_url) as conn:
        status, project_id = conn.execute("SELECT status, project_id FROM scans WHERE id = %s",
                                          (scan_id,)).fetchone()
        process = "forest-inventory" if status == "ready" else "ingest-scan"
        job = conn.execute("SELECT identifier, status FROM jobs WHERE process_id = %s AND parent_id IS NULL "
                           "AND inputs->'inputs'->>'scan' = %s ORDER BY created DESC LIMIT 1",
                           (process, str(scan_id))).fetchone()
        owner = conn.execute("SELECT created_by FROM projects WHERE id = %s", (project_id,)).fetchone()[0]
    if job and job[1] == "successful" and process == "forest-inventory":
        return None
    if job and job[1] in ("accepted", "running"):
        return job[0], process
    from .jobs import store
    from .jobs.queue import enqueue
    from .jobs.registry import processor
    from .jobs.views import _validate_inputs

    inputs = _validate_inputs(process, processor(process).metadata, {"scan": scan_id})
    job_id = store.create(process, inputs, owner, project_id)["id"]
    enqueue(job_id)
    return job_id, process


def follow(settings, log=print, stop=lambda: False, poll: float = 1.0) -> bool:
    """Complete the demo through the job system, printing its progress; True once its
    `forest-inventory` job has succeeded (False when stopped or a job failed). Jobs are read
    with plain SQL: a start that finds the demo complete imports nothing heavy."""
    scan_id = ensure_scan(settings, log)
    while not stop():
        step = next_job(settings, scan_id)
        if step is None:
            return True
        job_id, process = step
        word = "inventory" if process == "forest-inventory" else "ingestion"
        shown = None
        while not stop():
            with psycopg.connect(settings.database_url) as conn:
                job = dict(zip(("status", "progress", "message"), conn.execute(
                    "SELECT status, progress, message FROM jobs WHERE identifier = %s", (job_id,)).fetchone()))
            if job["status"] in ("failed", "dismissed"):
                log(f"demo: {word} {job['status']}: {job['message']} (see {settings.public_url}/jobs/{job_id})")
                return False
            if job["status"] == "successful":
                log(f"demo: {word} done")
                break
            now = (job["status"], int(job["progress"]) // 10)
            if now != shown:
                shown = now
                log(f"demo: {word} {job['status']} {int(job['progress'])}%… {job['message'] or ''}".rstrip())
            time.sleep(poll)
    return False
