"""Exports of a big trees collection: time, size and peak memory per format, beside GDAL.

Loads N trees (default 1,000,000) into a private PostGIS, then for each format
downloads `/collections/trees/items?f=…` from Canopy under gunicorn (one worker,
started afresh per format so its peak RSS — VmHWM — is that export's), and runs the
reference side by side: GDAL's own ogr2ogr reading the same rows straight from
PostgreSQL into the same format (CSV: PostgreSQL's COPY … TO STDOUT). Figures only:
nothing passes or fails on time.

    .venv/bin/python bench/exports.py [--trees 1000000] [--formats gpkg,fgb,csv,shp]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import canopy, private_stack  # noqa: E402

EPSG = 32610
_REFERENCE_SQL = ("SELECT t.id, t.scan_id, t.project_id, t.x, t.y, t.height_m, t.crown_area_m2, t.crown_diameter_m, "
                  "t.apex_height_m, t.run_id, t.created_at, s.crs_epsg, ST_X(t.geom) AS lon, ST_Y(t.geom) AS lat, "
                  "t.geom FROM trees t LEFT JOIN scans s ON s.id = t.scan_id ORDER BY t.id")
_DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf", "shp": "ESRI Shapefile"}


def load(db: str, n: int) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        pid = conn.execute("INSERT INTO projects (name, visibility) VALUES ('bench', 'public') RETURNING id").fetchone()[0]
        sid = conn.execute("INSERT INTO scans (project_id, name, status, crs_epsg) VALUES (%s, 'bench', 'ready', %s) "
                           "RETURNING id", (pid, EPSG)).fetchone()[0]
        conn.execute("SELECT setseed(0.17)")
        conn.execute(
            "INSERT INTO trees (scan_id, project_id, x, y, geom, height_m, crown_area_m2, crown_diameter_m, "
            "apex_height_m) SELECT %s, %s, x, y, ST_Transform(ST_SetSRID(ST_MakePoint(x, y), %s), 4326), h, h * 1.4, "
            "h / 5, h + 0.2 FROM (SELECT 500000 + random() * 10000 AS x, 5000000 + random() * 10000 AS y, "
            "5 + random() * 40 AS h FROM generate_series(1, %s)) g", (sid, pid, EPSG, n))
        conn.execute("VACUUM ANALYZE trees")


def _worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _download(url: str, dest: Path) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=1800) as resp, open(dest, "wb") as fh:
        while chunk := resp.read(1 << 20):
            fh.write(chunk)
    return time.perf_counter() - start


def _reference(db: str, fmt: str, dest: Path) -> float:
    start = time.perf_counter()
    if fmt == "csv":
        with psycopg.connect(db) as conn, open(dest, "wb") as fh, conn.cursor().copy(
                f"COPY ({_REFERENCE_SQL.replace(', t.geom', '')}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
            for data in copy:
                fh.write(data)
    else:
        target = dest.with_suffix(".shp") if fmt == "shp" else dest
        subprocess.run(["ogr2ogr", "-f", _DRIVERS[fmt], str(target), f"PG:{db}", "-sql", _REFERENCE_SQL,
                        "-nln", "trees", "-lco", "ENCODING=UTF-8" if fmt == "shp" else "SPATIAL_INDEX=YES"],
                       check=True, capture_output=True)
        if fmt == "shp":
            with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
                for part in dest.parent.glob("ref.*"):
                    if part.suffix != ".zip":
                        zf.write(part, part.name)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=1_000_000)
    ap.add_argument("--formats", default="gpkg,fgb,csv,shp")
    args = ap.parse_args()
    with private_stack("bench-exports-") as stack, tempfile.TemporaryDirectory(dir=stack.work) as tmp:
        t0 = time.perf_counter()
        load(stack.db, args.trees)
        print(f"loaded {args.trees:,} trees in {time.perf_counter() - t0:.1f} s")
        print(f"{'format':<7}{'canopy s':>10}{'rows/s':>12}{'MiB':>9}{'peak RSS MiB':>14}{'idle RSS MiB':>14}"
              f"{'reference s':>13}{'ref MiB':>9}")
        for fmt in args.formats.split(","):
            with canopy(stack, workers=1) as (proc, base):
                urllib.request.urlopen(f"{base}/collections/trees/items?limit=10").read()   # warm the worker
                worker = _worker_pids(proc.pid)[0]
                idle = _hwm_mib(worker)
                dest = Path(tmp) / f"canopy.{fmt}"
                seconds = _download(f"{base}/collections/trees/items?f={fmt}", dest)
                peak = _hwm_mib(worker)
            ref = Path(tmp) / f"ref.{'zip' if fmt == 'shp' else fmt}"
            ref_seconds = _reference(stack.db, fmt, ref)
            print(f"{fmt:<7}{seconds:>10.1f}{args.trees / seconds:>12,.0f}{dest.stat().st_size / 2**20:>9.0f}"
                  f"{peak:>14.0f}{idle:>14.0f}{ref_seconds:>13.1f}{ref.stat().st_size / 2**20:>9.0f}")
            for path in Path(tmp).iterdir():
                path.unlink()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
