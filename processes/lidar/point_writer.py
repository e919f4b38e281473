"""Points written back as one LAS/LAZ file: ground-classified or height-normalised."""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InvalidParameter, NoGroundPoints
from .params import Params
from .points import GROUND
from .progress import Progress, ProgressFn
from .read import PathLike, open_scan
from .tile import ground_and_heights
from .tiling import bucket_points, in_core, load_bucket, plan_tiles


def write_points(inputs: PathLike | Sequence[PathLike], out_path: PathLike, *, mode: str = "ground", crs=None,
                 params: Params = Params(), progress: ProgressFn | None = None) -> dict:
    """Classify ground (``mode="ground"``) or normalise heights (``"normalize"``)
    tile by tile and write the points as one LAS/LAZ file (noise removed; normalised, the
    points the terrain model does not reach or that fall outside [zmin, hmax] too)."""
    import laspy

    if mode not in ("ground", "normalize"):
        raise InvalidParameter("mode must be 'ground' or 'normalize'")
    params.check()
    scan = open_scan(inputs, crs=crs)
    mg, cores = plan_tiles(scan.bounds_m, params)
    prog = Progress(progress, 100.0, mode)
    tmp = Path(tempfile.mkdtemp(prefix="canopy-tiles-"))
    f = scan.crs.xy_to_m
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales = np.array([0.001, 0.001, 0.001]) / np.array([f, f, 1.0]) if f != 1.0 else np.array([0.001] * 3)
    b = mg.bounds
    header.offsets = np.array([math.floor(b[0] / f), math.floor(b[1] / f), 0.0])
    header.add_crs(scan.crs.crs)
    n_out = n_ground = 0
    try:
        buckets = bucket_points(scan, cores, params.buffer, tmp, prog.slice(0, 0.3, scan.point_count, "reading"))
        tp = prog.slice(0.3, 1.0, len(cores), "tiles")
        with laspy.open(str(out_path), mode="w", header=header) as w:
            for i, core in enumerate(cores):
                tp.set(i, f"tile {i + 1}/{len(cores)}")
                pts = load_bucket(buckets[i])
                if not len(pts):
                    continue
                normalize = mode == "normalize"
                pts, _, norm = ground_and_heights(pts, params, params.buffer, heights=normalize)
                if not (pts.classification == GROUND).any():
                    raise NoGroundPoints(f"tile {i + 1}: no ground point (none classified, none found by the "
                                         "cloth filter)")
                pts = norm if normalize else pts
                pts = pts.subset(in_core(pts.x, pts.y, core))
                rec = laspy.ScaleAwarePointRecord.zeros(len(pts), header=header)
                rec.x, rec.y, rec.z = pts.x / f, pts.y / f, pts.z
                rec.intensity = pts.intensity
                rec.return_number = np.maximum(pts.return_number, 1)
                rec.number_of_returns = np.maximum(pts.number_of_returns, 1)
                rec.classification = pts.classification
                w.write_points(rec)
                n_out += len(pts)
                n_ground += int((pts.classification == GROUND).sum())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prog.done(f"{n_out:,} points written")
    return {"path": str(out_path), "points": n_out, "ground_points": n_ground,
            "ground_share": n_ground / n_out if n_out else 0.0}
