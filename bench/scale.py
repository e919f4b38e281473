"""Fan-out at scale: a synthetic scan in 16 files through `forest-inventory` with 1 and
then 2 worker processes, in one run; prints wall time, speed-up, the workers' peak RSS,
and whether both runs (and, with --single, an in-process single-machine run) give the
same CHM and tree set. Figures only; nothing passes or fails on time.

    .venv/bin/python bench/scale.py [--points 100e6] [--files 16] [--tile-size 250] [--single]
                                    [--workers 1,2] [--kill-at 40]

With --kill-at, the 2-worker run uses two separate consumers (like two machines) and
SIGKILLs one of them at that progress: the scan must still complete with the same result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import rasterio
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import add_user, canopy, private_stack, service_env  # noqa: E402
from processes.lidar.synthetic import ORIGIN, make_forest, write_las  # noqa: E402

POINTS_PER_M2 = 25.0        # what make_forest's defaults yield, about (returns included)


def write_scan(root: Path, points: float, files: int) -> list[Path]:
    """`files` square tiles (a √files x √files block) of one synthetic forest."""
    side = int(math.sqrt(files))
    tile = math.sqrt(points / files / POINTS_PER_M2)
    paths = []
    for i in range(side * side):
        r, c = divmod(i, side)
        pts, _ = make_forest("open", size=tile, seed=100 + i, origin=(ORIGIN[0] + c * tile, ORIGIN[1] + r * tile))
        paths.append(write_las(root / f"tile_{r}_{c}.laz", pts, crs="EPSG:32610"))
        del pts
    return paths


def peak_rss_mb(pids: list[int]) -> float:
    best = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            pass
    return best / 1024


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return kids + [g for k in kids for g in descendants(k)]


def inventory(stack, base: str, headers: dict, scan_id: int, workers: int, tile_size: float,
              kill_at: float | None = None) -> dict:
    """One `forest-inventory` run. With ``kill_at`` (a progress percentage) the workers run as
    separate consumers (like separate machines) and one of them is SIGKILLed at that progress."""
    env = dict(service_env(stack), CANOPY_FANOUT_POINTS="1")
    groups = [workers] if kill_at is None else [1] * workers
    procs = [subprocess.Popen([sys.executable, "-m", "server", "worker", "--workers", str(n)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for n in groups]
    killed = None
    try:
        time.sleep(2)
        t0 = time.perf_counter()
        job = requests.post(f"{base}/processes/forest-inventory/execution",
                            json={"inputs": {"scan": scan_id, "tile_size": tile_size}},
                            headers={"Prefer": "respond-async", **headers}).json()
        peak = 0.0
        while True:
            state = requests.get(f"{base}/jobs/{job['jobID']}", headers=headers).json()
            peak = max(peak, peak_rss_mb([d for p in procs if p.poll() is None for d in descendants(p.pid)]))
            if state["status"] in ("successful", "failed", "dismissed"):
                break
            if kill_at is not None and killed is None and state.get("progress", 0) >= kill_at:
                os.killpg(procs[0].pid, signal.SIGKILL)        # a whole worker machine dies
                killed = {"progress": state["progress"], "after": time.perf_counter() - t0}
            time.sleep(1)
        wall = time.perf_counter() - t0
        results = requests.get(f"{base}/jobs/{job['jobID']}/results", headers=headers).json()
        return {"wall": wall, "status": state["status"], "peak": peak, "results": results, "job": job["jobID"],
                "killed": killed}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(60)


def ingest(stack, base: str, headers: dict) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "server", "worker", "--workers", "2"], cwd=ROOT,
                            env=service_env(stack), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        job = requests.post(f"{base}/processes/ingest-scan/execution", json={"inputs": {"scan": 1}},
                            headers={"Prefer": "respond-async", **headers}).json()
        while requests.get(f"{base}/jobs/{job['jobID']}", headers=headers).json()["status"] in ("accepted",
                                                                                                "running"):
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def products(stack, scan_id: int) -> tuple[np.ndarray, np.ndarray]:
    with psycopg.connect(stack.db) as conn:
        key = conn.execute("SELECT storage_uri FROM rasters WHERE scan_id = %s AND kind = 'chm'",
                           (scan_id,)).fetchone()[0]
        trees = np.array(conn.execute("SELECT x, y, height_m FROM trees WHERE scan_id = %s ORDER BY x, y",
                                      (scan_id,)).fetchall(), dtype=float)
    with rasterio.open(stack.work / "storage" / key) as ds:
        return ds.read(1), trees


def same(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"different shapes {a.shape} vs {b.shape}"
    both = np.isfinite(a) & np.isfinite(b)
    if (np.isnan(a) != np.isnan(b)).any():
        return "different nodata"
    return f"max |difference| {np.abs(a[both] - b[both]).max() if both.any() else 0.0:.2e}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=float, default=100e6)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--tile-size", type=float, default=250)
    ap.add_argument("--single", action="store_true", help="also run the single-machine engine in-process")
    ap.add_argument("--workers", default="1,2", help="worker process counts to run, e.g. 2 or 1,2")
    ap.add_argument("--kill-at", type=float, help="with 2+ workers: SIGKILL one worker (machine) at this progress %%")
    args = ap.parse_args()
    with private_stack("bench-scale-") as stack, canopy(stack) as (_, base):
        t = time.perf_counter()
        scan_dir = stack.work / "storage" / "scans" / "1"
        scan_dir.mkdir(parents=True)
        paths = write_scan(scan_dir, args.points, args.files)
        uid = add_user(stack.db, "scale", "scale password")
        with psycopg.connect(stack.db, autocommit=True) as conn:
            pid = conn.execute("INSERT INTO projects (name) VALUES ('scale') RETURNING id").fetchone()[0]
            conn.execute("INSERT INTO project_members VALUES (%s, %s, 'owner')", (pid, uid))
            conn.execute("INSERT INTO scans (id, project_id, name, status) OVERRIDING SYSTEM VALUE "
                         "VALUES (1, %s, 'scale', 'uploaded')", (pid,))
            for p in paths:
                conn.execute("INSERT INTO scan_files (scan_id, storage_uri) VALUES (1, %s)",
                             (str(p.relative_to(stack.work / "storage")),))
        import laspy
        n = sum(laspy.open(p).header.point_count for p in paths)
        print(f"synthetic scan: {n:,} points in {len(paths)} files, written in {time.perf_counter() - t:.0f} s")
        token = requests.post(f"{base}/auth/token", json={"username": "scale", "password": "scale password"}
                              ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        ingest(stack, base, headers)
        runs = {}
        counts = [int(w) for w in args.workers.split(",")]
        for workers in counts:
            kill_at = args.kill_at if workers > 1 else None
            runs[workers] = inventory(stack, base, headers, 1, workers, args.tile_size, kill_at)
            runs[workers]["chm"], runs[workers]["trees"] = products(stack, 1)
            r = runs[workers]
            if r["killed"]:
                print(f"  one of the {workers} workers was SIGKILLed at {r['killed']['progress']}% progress "
                      f"({r['killed']['after']:.0f} s into the run)")
            print(f"{workers} worker process(es): {r['status']} in {r['wall']:.1f} s "
                  f"({n / r['wall'] / 1e6:.2f} M points/s), {r['results']['summary']['tiles']} tiles, "
                  f"{r['results']['summary']['tree_count']} trees, peak RSS of any worker process "
                  f"{r['peak']:.0f} MB")
        if 1 in runs and 2 in runs:
            identical = runs[2]["trees"].shape == runs[1]["trees"].shape and np.allclose(runs[2]["trees"],
                                                                                         runs[1]["trees"])
            print(f"speed-up 2 vs 1 worker processes: {runs[1]['wall'] / runs[2]['wall']:.2f}x")
            print(f"CHM, 2 workers vs 1: {same(runs[2]['chm'], runs[1]['chm'])}; trees "
                  f"{'identical' if identical else 'DIFFERENT'}")
        last = runs[counts[-1]]
        if args.single:
            from processes.lidar.pipeline import ALL_PRODUCTS, Params, run
            t = time.perf_counter()
            out = stack.work / "single"
            summary = run([str(p) for p in paths], out, params=Params(tile_size=args.tile_size),
                          products=ALL_PRODUCTS)
            with rasterio.open(summary["products"]["chm"]) as ds:
                single = ds.read(1)
            trees = json.loads(Path(summary["products"]["trees"]).read_text())["features"]
            single_trees = np.array(sorted((f["geometry"]["coordinates"][0], f["geometry"]["coordinates"][1],
                                            f["properties"]["height"]) for f in trees))
            identical = single_trees.shape == last["trees"].shape and np.allclose(single_trees, last["trees"],
                                                                                  atol=1e-6)
            print(f"single machine in-process: {time.perf_counter() - t:.1f} s, {len(trees)} trees; "
                  f"CHM vs fanned out: {same(last['chm'], single)}; tree sets "
                  f"{'identical' if identical else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
