"""LiDAR engine benchmark: points/s and peak RSS per step, beside raw lazrs decompression.

Every measurement runs in its own subprocess, on the same file, in the same run.
Tiles run on ``--jobs`` processes (default: one per core); "peak RSS" is the largest
process (the reader or a tile process), "RSS sum" the reader plus every tile process
at its peak (an upper bound of the memory in use at once):

    python bench/lidar.py                       # 1 M and 10 M synthetic points + bcts tiles
    python bench/lidar.py --sizes 1e6 10e6 50e6 --steps raw raw1 chm inventory
    python bench/lidar.py --sizes 1e6 --no-bcts

Steps: raw (lazrs, 2 threads), raw1 (lazrs, 1 thread), footprint, dtm, chm,
chm_p2r, trees, metrics, inventory.  Figures only: never passes or fails.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
ALL_STEPS = ["raw", "raw1", "footprint", "dtm", "chm", "chm_p2r", "trees", "metrics", "inventory"]


def make_scan(path: Path, n_points: float, seed: int = 0) -> Path:
    """A synthetic classified forest of about ``n_points`` points, written block by block
    (a 200 m stand repeated with offsets, so generation stays fast and memory flat)."""
    import laspy
    import numpy as np

    from processes.lidar.synthetic import make_forest

    if path.exists():
        return path
    block, truth = make_forest("dense", size=200.0, seed=seed)
    per = len(block)
    nb = max(int(round(n_points / per)), 1)
    side = int(np.ceil(np.sqrt(nb)))
    header = laspy.LasHeader(point_format=1, version="1.2")
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array([truth.bounds[0], truth.bounds[1], 0.0])
    from pyproj import CRS

    header.add_crs(CRS.from_epsg(32610))
    tmp = path.with_suffix(".tmp.laz")
    with laspy.open(str(tmp), mode="w", header=header) as w:
        for k in range(nb):
            dx, dy = (k % side) * 200.0, (k // side) * 200.0
            rec = laspy.ScaleAwarePointRecord.zeros(per, header=header)
            rec.x, rec.y, rec.z = block.x + dx, block.y + dy, block.z + 0.02 * dx
            rec.intensity = block.intensity
            rec.return_number = block.return_number
            rec.number_of_returns = block.number_of_returns
            rec.classification = block.classification
            w.write_points(rec)
    tmp.rename(path)
    return path


def measure(step: str, files: list[str], out: str, jobs: int) -> dict:
    """Run one step in this process and report time, points and peak RSS."""
    import laspy

    t = time.perf_counter()
    n = 0
    if step in ("raw", "raw1"):
        backend = laspy.LazBackend.LazrsParallel if step == "raw" else laspy.LazBackend.Lazrs
        for f in files:
            with laspy.open(f, laz_backend=backend) as r:
                for chunk in r.chunk_iterator(1_000_000):
                    n += len(chunk)
    elif step == "footprint":
        from processes.lidar.footprint import footprint

        n = footprint(files)["point_count"]
    else:
        from processes.lidar import pipeline
        from processes.lidar.surface import p2r

        products = {"dtm": {"dtm"}, "chm": {"chm"}, "chm_p2r": {"chm"}, "trees": {"trees", "crowns"},
                    "metrics": {"grid_metrics"}, "inventory": pipeline.ALL_PRODUCTS}[step]
        params = pipeline.Params(chm=p2r()) if step == "chm_p2r" else pipeline.Params()
        s = pipeline.run(files, out, params=params, products=products, jobs=jobs)
        n = s["point_count"]
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux: KB)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest tile process
    return {"step": step, "points": n, "seconds": dt, "points_per_s": n / dt, "peak_rss_mb": max(rss, kids),
            "rss_sum_mb": rss + kids * jobs if kids else rss}


def run_child(step: str, files: list[Path], jobs: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, __file__, "--measure", step, "--out", out, "--jobs", str(jobs), *map(str, files)]
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"step": step, "error": r.stderr.strip().splitlines()[-1] if r.stderr else "failed"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e6, 10e6])
    ap.add_argument("--steps", nargs="*", default=ALL_STEPS)
    ap.add_argument("--no-bcts", action="store_true")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "canopy-bench")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="processes working on tiles at once (default: one per core)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.files, a.out, a.jobs)))
        return
    a.cache.mkdir(parents=True, exist_ok=True)
    datasets: list[tuple[str, list[Path]]] = []
    for size in a.sizes:
        t = time.perf_counter()
        p = make_scan(a.cache / f"synthetic_{int(size)}.laz", size)
        print(f"# synthetic scan {p.name} ready ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
        datasets.append((f"synthetic {size / 1e6:g} M", [p]))
    bcts = sorted(SHARED.glob("bcts_*.laz"))
    if bcts and not a.no_bcts:
        datasets.append(("bcts 4 tiles", bcts))
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; tiles on {a.jobs} process(es)")
    print(f"{'dataset':<16} {'step':<10} {'points':>12} {'seconds':>9} {'Mpts/s':>8} {'x raw':>7} {'peak RSS MB':>12} "
          f"{'RSS sum MB':>11}")
    for name, files in datasets:
        raw = None
        for step in a.steps:
            r = run_child(step, files, a.jobs)
            if "error" in r:
                print(f"{name:<16} {step:<10} error: {r['error']}")
                continue
            if step == "raw":
                raw = r["points_per_s"]
            rel = f"{r['points_per_s'] / raw:.2f}" if raw else ""
            print(f"{name:<16} {step:<10} {r['points']:>12,} {r['seconds']:>9.2f} {r['points_per_s'] / 1e6:>8.2f} "
                  f"{rel:>7} {r['peak_rss_mb']:>12.0f} {r['rss_sum_mb']:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
