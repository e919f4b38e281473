"""Individual tree detection by local maximum filtering (lidR ``lmf``).

A cell of the CHM (or a point) is a tree top when it is the highest within a
circular window of diameter ``ws`` around it and at least ``hmin`` high.
``ws`` is a number or a function of height, so tall trees get wide windows
and short trees narrow ones (Popescu & Wynne 2004).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import InvalidParameter
from .grid import Raster
from .points import Points


def default_ws(h: np.ndarray) -> np.ndarray:
    """Window diameter (m) growing with height: 2 m up to 20 m, 2.6 m at 30 m, at most 4 m.

    Small on purpose: on a pit-free CHM a narrow window keeps the tops of
    dense stands apart (closest stems ~2.7 m) while broadleaf lobes, lower
    than their top, are still dominated within the window.
    """
    return np.clip(0.8 + 0.06 * np.asarray(h, float), 2.0, 4.0)


@dataclass(frozen=True)
class lmf:
    """Local maximum filter.

    ws : float or callable(height) -> diameter, metres.
    hmin : minimum tree height, metres.
    shape : "circular" or "square".
    smooth : sigma (metres) of a Gaussian applied to the CHM before the
        search; the top's height is read from the unsmoothed CHM.
    prominence : a top must rise at least this much (metres) above the
        highest saddle linking it to a higher top (an h-maxima filter).  Lobes
        of one broadleaf crown are separated by shallow saddles, neighbouring
        trees by deep ones, so this removes false maxima that a window small
        enough for dense stands lets through.  0 disables it.
    """

    ws: float | Callable[[np.ndarray], np.ndarray] = default_ws
    hmin: float = 2.0
    shape: str = "circular"
    smooth: float = 0.0
    prominence: float = 0.0


def _footprint(diam_cells: int, shape: str) -> np.ndarray:
    r = (diam_cells - 1) / 2
    if shape == "square":
        return np.ones((diam_cells, diam_cells), bool)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx**2 + yy**2 <= r**2 + 1e-9


def locate_trees(chm: Raster | Points, algorithm: lmf = lmf()) -> dict[str, np.ndarray]:
    """Tree tops: ``{"x", "y", "height"}`` arrays (metres, metre frame).

    Parameters
    ----------
    chm : Raster or Points
        A canopy height model or height-normalised points.
    algorithm : lmf
    """
    if not isinstance(algorithm, lmf):
        raise InvalidParameter(f"unknown tree detection algorithm {algorithm!r}")
    if isinstance(chm, Points):
        return _lmf_points(chm, algorithm)
    return _lmf_raster(chm, algorithm)


def _ws_cells(ws, h, res):
    w = ws(h) if callable(ws) else np.full(np.shape(h), float(ws))
    d = np.maximum(np.round(np.asarray(w) / res).astype(np.int64), 1)
    return d | 1  # odd diameters keep the window centred


def _lmf_raster(chm: Raster, a: lmf) -> dict[str, np.ndarray]:
    g = chm.grid
    raw = np.nan_to_num(chm.data.astype(np.float64), nan=0.0)
    z = ndimage.gaussian_filter(raw, a.smooth / g.res) if a.smooth > 0 else raw
    cand = z >= a.hmin
    d = _ws_cells(a.ws, z, g.res)
    is_max = np.zeros(z.shape, bool)
    for size in np.unique(d[cand]):
        sel = cand & (d == size)
        mx = ndimage.maximum_filter(z, footprint=_footprint(int(size), a.shape), mode="nearest")
        is_max |= sel & (z >= mx)
    if a.prominence > 0:
        from skimage.morphology import h_maxima

        # h_maxima works on integers reliably: centimetres
        zi = np.round(z * 100).astype(np.int64)
        is_max &= ndimage.binary_dilation(h_maxima(zi, int(round(a.prominence * 100))).astype(bool), iterations=1)
    # plateaus: one top per connected group of equal maxima
    lab, n = ndimage.label(is_max, structure=np.ones((3, 3)))
    if n == 0:
        return {"x": np.empty(0), "y": np.empty(0), "height": np.empty(0)}
    rows, cols = np.nonzero(is_max)
    lbl = lab[rows, cols]
    order = np.argsort(lbl, kind="stable")
    keep = np.ones(len(order), bool)
    keep[1:] = lbl[order][1:] != lbl[order][:-1]
    rows, cols = rows[order][keep], cols[order][keep]
    x = g.x0 + (cols + 0.5) * g.res
    y = g.y0 - (rows + 0.5) * g.res
    # height: the unsmoothed CHM's maximum next to the top
    hmax = ndimage.maximum_filter(raw, size=3, mode="nearest")[rows, cols]
    return {"x": x, "y": y, "height": hmax.astype(np.float64)}


def _lmf_points(p: Points, a: lmf) -> dict[str, np.ndarray]:
    keep = p.z >= a.hmin
    x, y, z = p.x[keep], p.y[keep], p.z[keep]
    if not len(x):
        return {"x": np.empty(0), "y": np.empty(0), "height": np.empty(0)}
    ws = a.ws(z) if callable(a.ws) else np.full(len(z), float(a.ws))
    kd = cKDTree(np.column_stack((x - x.min(), y - y.min())))
    xy = np.column_stack((x - x.min(), y - y.min()))
    top = np.zeros(len(x), bool)
    # a point is a top when no higher point lies in its window (ties: the first wins)
    nb = kd.query_ball_point(xy, ws / 2, workers=-1)
    for i in range(len(x)):
        j = np.asarray(nb[i])
        top[i] = z[i] >= z[j].max() and not np.any((z[j] == z[i]) & (j < i))
    return {"x": x[top], "y": y[top], "height": z[top]}


def _near_tops(x, y, tx, ty, radius: float) -> np.ndarray:
    """Mask of the points that may lie within ``radius`` of a top: those in the
    radius-sized cells around the tops' cells (a cheap superset)."""
    x0, y0 = min(x.min(), tx.min()), min(y.min(), ty.min())
    ci, ri = ((x - x0) // radius).astype(np.int64) + 1, ((y - y0) // radius).astype(np.int64) + 1
    tci, tri = ((tx - x0) // radius).astype(np.int64) + 1, ((ty - y0) // radius).astype(np.int64) + 1
    mark = np.zeros((max(ri.max(), tri.max()) + 2, max(ci.max(), tci.max()) + 2), bool)
    mark[tri, tci] = True
    mark = ndimage.binary_dilation(mark, structure=np.ones((3, 3), bool))
    return mark[ri, ci]


def tree_heights(points: Points, tops: dict[str, np.ndarray], radius: float = 0.75) -> np.ndarray:
    """Height of each top from the highest normalised point within ``radius``.

    A CHM cell holds an interpolated or binned value; the highest return near
    the apex is closer to the true height.  Tops with no point nearby keep
    their CHM height.
    """
    h = np.asarray(tops["height"], float).copy()
    if not len(h) or not len(points):
        return h
    ox, oy = float(points.x.min()), float(points.y.min())
    tx, ty = np.asarray(tops["x"], float) - ox, np.asarray(tops["y"], float) - oy
    sel = np.flatnonzero(points.z >= max(np.min(h) - 3.0, 0.0))
    px, py = points.x[sel] - ox, points.y[sel] - oy
    if not len(px):
        return h
    near = _near_tops(px, py, tx, ty, radius)
    px, py, pz = px[near], py[near], points.z[sel[near]]
    if not len(pz):
        return h
    kd = cKDTree(np.column_stack((px, py)))
    nb = kd.query_ball_point(np.column_stack((tx, ty)), radius, workers=-1)
    # flatten the neighbour lists: (top, point) pairs, then the highest point per top
    lens = np.fromiter(map(len, nb), np.int64, len(nb))
    j = np.fromiter(itertools.chain.from_iterable(nb), np.int64, int(lens.sum()))
    best = np.full(len(h), -np.inf)
    np.maximum.at(best, np.repeat(np.arange(len(h)), lens), pz[j])
    return np.where(lens > 0, best, h)
