"""Footprint, point count and density of a scan, in one streamed pass.

The footprint is the outline of an occupancy grid (cells holding at least one
point), closed over small gaps and simplified: tighter than a convex hull for
irregular flight blocks, and computed in chunks so memory depends on the grid,
not on the number of points.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import shapely
from rasterio import features
from rasterio.transform import Affine
from scipy import ndimage

from .errors import EmptyResult
from .progress import Progress
from .read import PathLike, iter_points, open_scan

MAX_CELLS = 16_000_000
OCCUPANCY_CELL = 2.0  # metres: a scan's area is its cells of this size that hold a point


def footprint(
    inputs: PathLike | Sequence[PathLike],
    *,
    crs=None,
    cell_size: float | None = None,
    hull: str = "occupancy",
    progress: Callable[[float, str], None] | None = None,
) -> dict:
    """Point count, density (points/m²) and footprint polygon of one or several files.

    Parameters
    ----------
    inputs : path or list of paths
        The files of one scan.
    crs : CRS-like, optional
        CRS override for files without one.
    cell_size : float, optional
        Occupancy grid cell in metres (default: 2 m, coarser for huge scans so
        the grid stays under 16 M cells).
    hull : {"occupancy", "convex"}
        Outline of occupied cells (default) or convex hull of them.
    progress : callable(percent, message), optional

    Returns
    -------
    dict
        ``point_count``, ``area_m2`` (occupied area), ``density`` (points/m²),
        ``first_density`` (first returns/m², which sets the CHM cell: :func:`.surface.chm_cell`),
        ``footprint`` (shapely Polygon/MultiPolygon in the scan's native CRS
        units), ``crs`` (pyproj CRS), ``crs_epsg``, ``crs_wkt``,
        ``bounds`` (native minx, miny, maxx, maxy), ``files`` (per-file inspect facts).
    """
    scan = open_scan(inputs, crs=crs)
    prog = Progress(progress, total=max(scan.point_count, 1), label="footprint")
    if scan.point_count == 0:
        raise EmptyResult("the scan holds no points")
    occ = Occupancy(scan.bounds_m, cell_size)
    n = 0
    for pts in iter_points(scan, xy_only=True):
        occ.add(pts.x, pts.y, pts.return_number)
        n += len(pts)
        prog.advance(len(pts), f"{n:,} points")
    occupied, cs = occ.occupied, occ.cell
    minx, miny, maxx, maxy = scan.bounds_m
    occupied_area = occ.area_m2
    # close 1-2 cell gaps between scan lines, fill holes smaller than ~10 cells
    mask = ndimage.binary_closing(np.pad(occupied, 2), iterations=2)[2:-2, 2:-2] | occupied
    holes = ndimage.binary_fill_holes(mask) & ~mask
    lab, nh = ndimage.label(holes)
    if nh:
        sizes = ndimage.sum(holes, lab, index=np.arange(1, nh + 1))
        mask |= np.isin(lab, np.flatnonzero(sizes < 10) + 1)
    f = scan.crs.xy_to_m
    transform = Affine(cs / f, 0, minx / f, 0, -cs / f, maxy / f)
    polys = [shapely.geometry.shape(g) for g, v in features.shapes(mask.astype(np.uint8), transform=transform) if v == 1]
    geom = shapely.union_all(polys) if polys else shapely.Polygon()
    if hull == "convex":
        geom = geom.convex_hull
    else:
        geom = geom.simplify(cs / f, preserve_topology=True)
    prog.done("footprint ready")
    return {
        "point_count": n,
        "area_m2": occupied_area,
        "density": n / occupied_area if occupied_area else 0.0,
        "first_density": occ.first_density,
        "footprint": geom,
        "crs": scan.crs.crs,
        "crs_epsg": scan.crs.epsg,
        "crs_wkt": scan.crs.wkt,
        "bounds": (minx / f, miny / f, maxx / f, maxy / f),
        "files": [sf.info for sf in scan.files],
    }


class Occupancy:
    """The cells of a grid over ``bounds`` (metres) that hold at least one point, filled
    chunk by chunk: ``cell`` is 2 m, coarser for huge scans so the grid stays under 16 M
    cells. The first returns are counted too (:attr:`first_density`)."""

    def __init__(self, bounds: tuple[float, float, float, float], cell_size: float | None = None):
        self.minx, self.miny, maxx, self.maxy = bounds
        area = max((maxx - self.minx) * (self.maxy - self.miny), 1.0)
        self.cell = cell_size or max(OCCUPANCY_CELL, math.sqrt(area / MAX_CELLS))
        self.ncol = int((maxx - self.minx) // self.cell) + 1
        self.nrow = int((self.maxy - self.miny) // self.cell) + 1
        self._hit = np.zeros(self.nrow * self.ncol, dtype=bool)
        self.first_returns = 0

    def add(self, x: np.ndarray, y: np.ndarray, return_number: np.ndarray | None = None) -> None:
        c = np.clip(((x - self.minx) // self.cell).astype(np.int64), 0, self.ncol - 1)
        r = np.clip(((self.maxy - y) // self.cell).astype(np.int64), 0, self.nrow - 1)
        self._hit[r * self.ncol + c] = True
        if return_number is not None:
            self.first_returns += int(np.count_nonzero(return_number <= 1))

    @property
    def occupied(self) -> np.ndarray:
        return self._hit.reshape(self.nrow, self.ncol)

    @property
    def area_m2(self) -> float:
        return float(self._hit.sum()) * self.cell * self.cell

    @property
    def first_density(self) -> float:
        """First returns per m² of occupied area (0 for an empty grid)."""
        area = self.area_m2
        return self.first_returns / area if area else 0.0

