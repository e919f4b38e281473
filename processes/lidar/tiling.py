"""Buffered tiles on a global lattice: planning them, spilling a scan's points to them.

:func:`plan_tiles` cuts the scan's extent into square cores on the metrics lattice (a
multiple of every raster's resolution); :func:`bucket_points` streams the files once and
spills each point to the temporary bucket of every tile whose *buffered* extent holds it.
A tile can also read its own points directly (:func:`read_tile`), on another worker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .grid import Grid
from .params import Params
from .points import Points, SPILL_DTYPE, from_records, to_records
from .progress import Progress
from .read import Scan, iter_points, read_points

Bounds = tuple[float, float, float, float]


def plan_tiles(bounds: Bounds, params: Params) -> tuple[Grid, list[Bounds]]:
    """The scan's metrics grid and the tile cores (multiples of ``metrics_res``) covering it."""
    params.check()
    # cells are half-open (x in [x0, x1), y in (y0, y1]): make sure the east and
    # south extremes fall inside even when they lie exactly on the lattice
    eps = 1e-6 * params.metrics_res
    mg = Grid.covering((bounds[0], bounds[1] - eps, bounds[2] + eps, bounds[3]), params.metrics_res)
    k = max(int(round(params.tile_size / params.metrics_res)), 1)
    cores = []
    for r0 in range(0, mg.nrow, k):
        for c0 in range(0, mg.ncol, k):
            x0 = mg.x0 + c0 * mg.res
            y1 = mg.y0 - r0 * mg.res
            x1 = mg.x0 + min(c0 + k, mg.ncol) * mg.res
            y0 = mg.y0 - min(r0 + k, mg.nrow) * mg.res
            cores.append((x0, y0, x1, y1))
    return mg, cores


def buffered(b: Bounds, buffer: float) -> Bounds:
    return (b[0] - buffer, b[1] - buffer, b[2] + buffer, b[3] + buffer)


def in_core(x: np.ndarray, y: np.ndarray, core: Bounds) -> np.ndarray:
    """Half-open membership (west/south edges in, east/north... edges by cell rule)."""
    return (x >= core[0]) & (x < core[2]) & (y > core[1]) & (y <= core[3])


def bucket_points(scan: Scan, cores: list[Bounds], buffer: float, workdir: Path,
                  progress: Progress | None = None, observe: Callable[[Points], None] | None = None) -> list[Path]:
    """Stream the scan once, appending each point to every buffered tile holding it
    (and showing each chunk to ``observe``)."""
    paths = [workdir / f"tile_{i:05d}.bin" for i in range(len(cores))]
    handles: dict[int, object] = {}
    bb = np.array([buffered(c, buffer) for c in cores])
    try:
        for pts in iter_points(scan):
            if observe is not None:
                observe(pts)
            cx0, cy0, cx1, cy1 = pts.x.min(), pts.y.min(), pts.x.max(), pts.y.max()
            hit = np.flatnonzero((bb[:, 0] <= cx1) & (bb[:, 2] >= cx0) & (bb[:, 1] <= cy1) & (bb[:, 3] >= cy0))
            for i in hit:
                b = bb[i]
                m = (pts.x >= b[0]) & (pts.x <= b[2]) & (pts.y >= b[1]) & (pts.y <= b[3])
                if not m.any():
                    continue
                if i not in handles:
                    handles[i] = open(paths[i], "ab")
                to_records(pts.subset(m)).tofile(handles[i])
            if progress is not None:
                progress.advance(len(pts), f"read {progress.done_units:,.0f} points")
    finally:
        for h in handles.values():
            h.close()
    return paths


def load_bucket(path: Path) -> Points:
    if not path.exists():
        return Points.empty()
    return from_records(np.fromfile(path, dtype=SPILL_DTYPE))


def read_tile(scan: Scan, core: Bounds, buffer: float) -> Points:
    """The points of one buffered tile, read directly from the files (for a worker running one tile)."""
    return read_points(scan, buffered(core, buffer))
