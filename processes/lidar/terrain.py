"""Terrain model (DTM) and height normalisation.

The DTM is a TIN of ground points (linear interpolation on the Delaunay
triangulation, lidR's ``tin()``) with inverse-distance weighting of the ``k``
nearest ground points where the TIN has no triangle (lidR's ``knnidw()``,
outside the hull).  Normalisation subtracts the TIN itself at each point's own
position, not a raster, so heights carry no resampling error.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from .algorithms import Parameters, algorithm, param
from .errors import NoGroundPoints
from .grid import Grid, Raster
from .points import GROUND, Points
from .tin import TIN


@algorithm("dtm")
class knnidw(Parameters):
    """k-nearest-neighbour inverse distance weighting (lidR ``knnidw``)."""

    k: int = param(10, "Ground points averaged", "integer", minimum=1, maximum=100)
    p: float = param(2.0, "Power of the inverse distance", minimum=0, maximum=10)
    rmax: float = param(50.0, "Ground points farther than this are not used (m)", exclusive_minimum=True,
                        minimum=0, maximum=1000)

    triangulated = False

    @property
    def idw(self) -> "knnidw":
        return self

    def within(self, buffer: float) -> "knnidw":
        """This algorithm with its reach limited to a tile's ``buffer``, so that every cell of a
        core sees the same ground points in its tile as in the whole scan."""
        return replace(self, rmax=min(self.rmax, buffer)) if buffer > 0 else self


@algorithm("dtm", default=True)
class tin(Parameters):
    """Delaunay TIN of the ground points with ``knnidw`` where it has no (kept) triangle.

    ``max_radius``: a Delaunay triangle depends on every point inside its
    circumcircle, so a tile with a buffer of at least this radius builds exactly the
    triangles the whole scan would; the long slivers along a scan's outer edge
    (which depend on far-away points) fall back to IDW instead.
    """

    fallback: knnidw = param(knnidw(), "IDW used where the TIN has no triangle", "object")
    max_edge: float = param(0.0, "Triangles with a longer edge are dropped (m; 0: keep all)", minimum=0,
                            maximum=1000)
    max_radius: float = param(15.0, "Triangles with a wider circumcircle are dropped (m; 0: keep all)",
                              minimum=0, maximum=1000)

    triangulated = True

    @property
    def idw(self) -> knnidw:
        return self.fallback

    def within(self, buffer: float) -> "tin":
        return replace(self, fallback=self.fallback.within(buffer)) if buffer > 0 else self


def _lowest_unique_xy(x, y, z):
    """Keep one point per (x, y), the lowest: a triangulator would keep an arbitrary one."""
    order = np.lexsort((z, y, x))
    xs, ys = x[order], y[order]
    first = np.ones(len(xs), bool)
    first[1:] = (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
    if first.all():
        return x, y, z
    keep = np.sort(order[first])  # keep the input order
    return x[keep], y[keep], z[keep]


class GroundModel:
    """A terrain surface from ground points that can be evaluated anywhere."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, algorithm: tin | knnidw = tin()):
        if len(x) == 0:
            raise NoGroundPoints("no ground points: classify ground first (or check the file's classes)")
        x, y, z = _lowest_unique_xy(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
        self.algorithm = algorithm
        self.x, self.y, self.z = x, y, z
        self.ox, self.oy = float(x.min()), float(y.min())
        self._kd: cKDTree | None = None
        self.tin = TIN(x, y, z) if algorithm.triangulated and len(x) >= 3 else None
        self.invalid = None
        if self.tin is not None and len(self.tin):
            bad = self.tin.invalid(algorithm.max_edge, algorithm.max_radius or 0.0)
            self.invalid = bad if bad.any() else None

    @classmethod
    def from_points(cls, points: Points, algorithm: tin | knnidw = tin()) -> "GroundModel":
        g = points.classification == GROUND
        return cls(points.x[g], points.y[g], points.z[g], algorithm)

    def _idw(self, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        a = self.algorithm.idw
        if self._kd is None:
            self._kd = cKDTree(np.column_stack((self.x - self.ox, self.y - self.oy)))
        k = min(a.k, len(self.x))
        d, i = self._kd.query(np.column_stack((qx - self.ox, qy - self.oy)), k=k, workers=-1)
        if k == 1:
            d, i = d[:, None], i[:, None]
        d = np.maximum(d, 1e-6)
        w = 1.0 / d**a.p
        w[d > a.rmax] = 0.0
        ws = w.sum(axis=1)
        out = np.full(len(qx), np.nan)
        ok = ws > 0
        out[ok] = (w[ok] * self.z[i[ok]]).sum(axis=1) / ws[ok]
        return out

    def __call__(self, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Ground elevation at the query points (NaN farther than ``rmax`` from any ground point)."""
        shape = np.shape(qx)
        qx = np.ravel(qx)
        qy = np.ravel(qy)
        if self.tin is not None and len(self.tin):
            z = self.tin.interpolate(qx, qy, self.invalid)
        else:
            z = np.full(len(qx), np.nan)
        miss = np.isnan(z)
        if miss.any():
            z[miss] = self._idw(qx[miss], qy[miss])
        return z.reshape(shape)

    def on_grid(self, grid: Grid) -> np.ndarray:
        """Ground elevation at the cell centres of ``grid`` (same values as ``self(*grid.centers())``).

        The TIN is scan-converted onto the grid (see :meth:`TIN.rasterize`);
        only the cells it leaves empty are located and interpolated by IDW.
        """
        if self.tin is not None and len(self.tin):
            z = self.tin.rasterize(grid, self.invalid).ravel()
        else:
            z = np.full(grid.nrow * grid.ncol, np.nan)
        miss = np.flatnonzero(np.isnan(z))
        if len(miss):
            cx, cy = grid.centers()
            z[miss] = self._idw(cx.ravel()[miss], cy.ravel()[miss])
        return z.reshape(grid.shape)


def rasterize_terrain(points: Points, res: float = 1.0, algorithm: tin | knnidw = tin(), *,
                      grid: Grid | None = None, model: GroundModel | None = None) -> Raster:
    """DTM: the ground model evaluated at cell centres.

    Parameters
    ----------
    points : Points
        Points with ground classified (class 2).
    res : float
        Cell size in metres (ignored when ``grid`` is given).
    algorithm : tin or knnidw
    grid : Grid, optional
        Target grid (e.g. a tile's); default covers the points.
    model : GroundModel, optional
        A ground model already built from the same points.
    """
    model = model or GroundModel.from_points(points, algorithm)
    if grid is None:
        grid = Grid.covering((points.x.min(), points.y.min(), points.x.max(), points.y.max()), res)
    return Raster(model.on_grid(grid).astype(np.float32), grid, "dtm")


def normalize_height(points: Points, model: GroundModel | None = None, algorithm: tin | knnidw = tin(), *,
                     zmin: float = -np.inf, hmax: float = np.inf) -> Points:
    """Points with ``z`` replaced by their height above the ground model at their own position,
    without those the model does not reach (no ground point within ``rmax``) or whose height
    lies outside [``zmin``, ``hmax``] (multipath below the terrain, birds and clouds above).

    Heights are rounded to the micrometre: the TIN's last-bit noise depends on the origin
    of the tile it was built in, and would otherwise break ties between equal heights
    differently in a tile and in the whole scan.
    """
    model = model or GroundModel.from_points(points, algorithm)
    h = np.round(points.z - model(points.x, points.y), 6)
    return points.replace(z=h).subset(np.isfinite(h) & (h >= zmin) & (h <= hmax))
