"""Surface and canopy height models (DSM / CHM) from points.

``p2r`` is lidR's point-to-raster: the highest point per cell, each point
optionally replaced by a small circle of 8 points (``subcircle``) to fill
empty cells.  ``pitfree`` is Khosravipour et al. (2014): TINs of the highest
first returns above successive height thresholds, each with its long-edged
triangles removed (``max_edge``), stacked by maximum, which removes the pits
that pulses passing through crowns leave in a max-binned CHM.

Each layer's TIN is scan-converted onto the CHM grid (:meth:`TIN.rasterize`)
rather than locating every cell in it; a layer whose vertex set equals the
previous layer's is not triangulated again.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidParameter
from .grid import Grid, Raster
from .points import Points
from .tin import TIN


@dataclass(frozen=True)
class p2r:
    """Point-to-raster: highest (sub-circled) point per cell."""

    subcircle: float = 0.0


@dataclass(frozen=True)
class pitfree:
    """Pit-free CHM (Khosravipour et al. 2014), lidR parameter names.

    thresholds : height layers (metres) triangulated separately.
    max_edge : (for the 0 layer, for the other layers): triangles with a longer
        edge are removed; 0 means no limit.  lidR's default for the 0 layer is
        0; 3 m is used here so holes in the data stay holes and the long
        triangles along a scan's outer edge (which depend on far-away points)
        do not make a tile differ from the whole scan.
    subcircle : radius of the 8-point circle replacing each first return.
    """

    thresholds: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
    max_edge: tuple[float, float] = (3.0, 1.0)
    subcircle: float = 0.0
    max_radius: float = 10.0
    vertex_res: float | None = 0.25  # spacing of the TIN vertices (highest return per vertex cell); None: the raster's


def _subcircle(x, y, z, r):
    """Each point and 8 copies of it on a circle of radius ``r`` (lidR's ``subcircle``)."""
    if r <= 0:
        return x, y, z
    ang = np.arange(8) * (np.pi / 4)
    dx, dy = r * np.cos(ang), r * np.sin(ang)
    X = np.concatenate([x] + [x + a for a in dx])
    Y = np.concatenate([y] + [y + b for b in dy])
    return X, Y, np.tile(z, 9)


def max_per_cell(x: np.ndarray, y: np.ndarray, z: np.ndarray, grid: Grid) -> np.ndarray:
    """Highest z per cell (NaN for empty cells)."""
    row, col, inside = grid.cell_of(x, y)
    flat = np.full(grid.nrow * grid.ncol, -np.inf)
    np.maximum.at(flat, row[inside] * grid.ncol + col[inside], z[inside])
    flat[np.isneginf(flat)] = np.nan
    return flat.reshape(grid.shape)


def highest_per_cell(x, y, z, grid: Grid) -> np.ndarray:
    """Index of the highest point in each occupied cell (the points a pit-free TIN is built on).

    Ties go to the first point; indices come in cell order.  Two unbuffered
    reductions instead of a sort.
    """
    row, col, inside = grid.cell_of(x, y)
    idx = np.flatnonzero(inside)
    cell = row[idx] * grid.ncol + col[idx]
    zi = z[idx]
    top = np.full(grid.nrow * grid.ncol, -np.inf)
    np.maximum.at(top, cell, zi)
    cand = np.flatnonzero(zi == top[cell])
    first = np.full(len(top), len(idx))
    np.minimum.at(first, cell[cand], cand)
    return idx[first[first < len(idx)]]


def rasterize_canopy(points: Points, res: float = 0.5, algorithm: p2r | pitfree = pitfree(), *,
                     grid: Grid | None = None) -> Raster:
    """DSM/CHM from points (a CHM when ``points`` are height-normalised).

    Parameters
    ----------
    points : Points
    res : float
        Cell size (ignored when ``grid`` is given).
    algorithm : p2r or pitfree
    grid : Grid, optional
        Target grid; points slightly outside it still contribute to the TINs.
    """
    if grid is None:
        grid = Grid.covering((points.x.min(), points.y.min(), points.x.max(), points.y.max()), res)
    if isinstance(algorithm, p2r):
        x, y, z = _subcircle(points.x, points.y, points.z, algorithm.subcircle)
        return Raster(max_per_cell(x, y, z, grid).astype(np.float32), grid, "chm")
    if not isinstance(algorithm, pitfree):
        raise InvalidParameter(f"unknown canopy algorithm {algorithm!r}")
    first = points.first
    x, y, z = _subcircle(points.x[first], points.y[first], points.z[first], algorithm.subcircle)
    # the TIN vertices: highest first return per cell, on a grid one cell larger
    # than the target so triangles reach its border
    vr = min(algorithm.vertex_res or grid.res, grid.res)
    k = max(int(round(grid.res / vr)), 1)
    big = Grid(grid.x0 - grid.res, grid.y0 + grid.res, grid.res / k, (grid.nrow + 2) * k, (grid.ncol + 2) * k)
    top = highest_per_cell(x, y, z, big)
    x, y, z = x[top], y[top], z[top]
    out = np.full(grid.shape, np.nan)
    me0, me1 = algorithm.max_edge
    prev = (-1, -1.0)
    for t in sorted(algorithm.thresholds):
        sel = z >= t
        n = int(sel.sum())
        if n < 3:
            break  # the layers above hold no canopy
        limit = me0 if t == min(algorithm.thresholds) else me1
        if (n, limit) == prev:
            continue  # no vertex between the two thresholds: the same TIN again
        prev = (n, limit)
        tin = TIN(x[sel], y[sel], z[sel], neighbors=False)
        if not len(tin):
            continue
        # long edges (pit-free rule) and wide circumcircles (not decided locally, see terrain.tin)
        invalid = tin.invalid(max_edge=limit, max_radius=algorithm.max_radius)
        np.fmax(out, tin.rasterize(grid, invalid), out=out)
    return Raster(out.astype(np.float32), grid, "chm")
