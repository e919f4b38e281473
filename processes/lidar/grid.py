"""Raster grids aligned on a global lattice, so tiles mosaic without resampling.

Every raster of a scan shares the lattice ``x = k * res``, ``y = k * res``
(metre frame): a tile's grid is a window of the scan's grid, cells never
straddle tile borders, and rasters computed tile by tile are bit-identical to
rasters computed for the whole scan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.transform import Affine

from .errors import InvalidParameter


@dataclass(frozen=True)
class Grid:
    """A north-up grid: ``x0`` west edge, ``y0`` north edge, square cells of ``res`` (metres)."""

    x0: float
    y0: float
    res: float
    nrow: int
    ncol: int

    @staticmethod
    def covering(bounds: tuple[float, float, float, float], res: float) -> "Grid":
        """The smallest lattice-aligned grid covering ``bounds`` (minx, miny, maxx, maxy)."""
        if not (res > 0 and math.isfinite(res)):
            raise InvalidParameter(f"resolution must be a positive number, got {res!r}")
        minx, miny, maxx, maxy = bounds
        x0 = math.floor(minx / res + 1e-9) * res
        y1 = math.floor(miny / res + 1e-9) * res
        x1 = max(math.ceil(maxx / res - 1e-9), math.floor(minx / res + 1e-9) + 1) * res
        y0 = max(math.ceil(maxy / res - 1e-9), math.floor(miny / res + 1e-9) + 1) * res
        ncol = int(round((x1 - x0) / res))
        nrow = int(round((y0 - y1) / res))
        if nrow * ncol > 400_000_000:
            raise InvalidParameter(f"a {nrow}x{ncol} grid at {res} m is too large; use a coarser resolution")
        return Grid(x0, y0, res, nrow, ncol)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.nrow, self.ncol)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0 - self.nrow * self.res, self.x0 + self.ncol * self.res, self.y0)

    def transform(self, to_native: float = 1.0) -> Affine:
        """GeoTIFF transform in the CRS's own units (``to_native`` = 1 / metres per unit)."""
        return Affine(self.res * to_native, 0, self.x0 * to_native, 0, -self.res * to_native, self.y0 * to_native)

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell-centre coordinates as two (nrow, ncol) arrays."""
        xs = self.x0 + (np.arange(self.ncol) + 0.5) * self.res
        ys = self.y0 - (np.arange(self.nrow) + 0.5) * self.res
        return np.meshgrid(xs, ys)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and inside-mask of points (half-open cells: west/north edges inclusive)."""
        col = np.floor((x - self.x0) / self.res).astype(np.int64)
        row = np.floor((self.y0 - y) / self.res).astype(np.int64)
        inside = (col >= 0) & (col < self.ncol) & (row >= 0) & (row < self.nrow)
        return row, col, inside

    def window_of(self, other: "Grid") -> tuple[int, int]:
        """(row_off, col_off) of ``other`` (same lattice) inside this grid."""
        return (int(round((self.y0 - other.y0) / self.res)), int(round((other.x0 - self.x0) / self.res)))

    def sub(self, bounds: tuple[float, float, float, float]) -> "Grid":
        """The lattice-aligned grid covering ``bounds`` (same res, same lattice)."""
        return Grid.covering(bounds, self.res)


@dataclass
class Raster:
    """A float32 band on a grid; NaN marks cells without a value."""

    data: np.ndarray
    grid: Grid
    name: str = ""

    def crop(self, grid: Grid) -> "Raster":
        """The part of this raster covered by ``grid`` (same lattice, inside this one)."""
        r, c = self.grid.window_of(grid)
        return Raster(self.data[..., r : r + grid.nrow, c : c + grid.ncol], grid, self.name)
