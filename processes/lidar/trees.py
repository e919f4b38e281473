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
from .grid import Grid, Raster
from .points import Points


COVER_CELL = 20.0  # metres: the lattice cells over which canopy cover is measured for the window


@dataclass(frozen=True)
class crown_window:
    """Window diameter from the tree's height and the canopy cover around it:
    ``ws = a + b h + k (1 - cover) h``, clipped to [``wmin``, ``wmax``] metres.

    A crown grows as wide as its neighbours let it.  Where the canopy is closed
    (cover near 1) crowns are as wide as the stem spacing and a top is the highest
    point within a narrow window (``a + b h``: 2.5 m at 20 m); where it is open, a
    crown is free-grown and its width follows height (open-grown conifers are
    about 0.2 h wide, Popescu & Wynne 2004 fit 0.1-0.3 h), so the window widens by
    ``k h`` times the open share.  Cover is the share of CHM cells above 2 m in each
    20 m lattice cell, which a tile and the whole scan measure alike.  Chosen on
    both truth families (bench/accuracy.py): with ``k = 0`` the open stands
    over-detect (F1 0.92-0.93 on the independent open stands), a window wide
    enough for them (3 + 0.08 h everywhere) loses a tenth of the F1 in the dense
    ones; with ``k`` from 0.15 to 0.25 every open, two-layer and dense stand is
    within 0.01 of its best F1; 0.2 sits in the middle of that plateau.
    """

    a: float = 1.5
    b: float = 0.05
    k: float = 0.2
    wmin: float = 2.0
    wmax: float = 12.0

    def __post_init__(self):
        for name in ("a", "b", "k", "wmin", "wmax"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise InvalidParameter(f"crown_window.{name} must be a number >= 0, got {v!r}")
        if self.wmax < self.wmin:
            raise InvalidParameter("crown_window.wmax must be at least wmin")

    def diameter(self, h: np.ndarray, cover: np.ndarray) -> np.ndarray:
        h = np.asarray(h, float)
        return np.clip(self.a + self.b * h + self.k * (1.0 - cover) * h, self.wmin, self.wmax)


def _lattice_share(x: np.ndarray, y: np.ndarray, flag: np.ndarray, cell: float) -> np.ndarray:
    """For each sample (x, y), the share of flagged samples in its ``cell``-sized lattice cell
    (a lattice cell cut by the data's edge counts the part it holds)."""
    if not len(x):
        return np.zeros(0)
    cg = Grid.covering((float(x.min()), float(y.min()), float(x.max()), float(y.max())), cell)
    r, c, _ = cg.cell_of(x, y)
    flat = np.clip(r, 0, cg.nrow - 1) * cg.ncol + np.clip(c, 0, cg.ncol - 1)
    n = np.bincount(flat, minlength=cg.nrow * cg.ncol)
    k = np.bincount(flat, weights=flag, minlength=cg.nrow * cg.ncol)
    return (k / np.maximum(n, 1))[flat]


def canopy_cover(chm: Raster, cell: float = COVER_CELL, above: float = 2.0) -> np.ndarray:
    """Share of the CHM's cells above ``above`` metres in each ``cell``-sized lattice cell,
    read back at every CHM cell."""
    cx, cy = chm.grid.centers()
    high = np.nan_to_num(chm.data, nan=0.0) > above
    return _lattice_share(cx.ravel(), cy.ravel(), high.ravel(), cell).reshape(chm.grid.shape)


@dataclass(frozen=True)
class lmf:
    """Local maximum filter.

    ws : float, callable(height) -> diameter, or :class:`crown_window` (metres).
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

    ws: float | Callable[[np.ndarray], np.ndarray] | crown_window = crown_window()
    hmin: float = 2.0
    shape: str = "circular"
    smooth: float = 0.0
    prominence: float = 0.0

    def __post_init__(self):
        if self.shape not in ("circular", "square"):
            raise InvalidParameter(f"lmf.shape must be 'circular' or 'square', got {self.shape!r}")
        for name in ("hmin", "smooth", "prominence"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise InvalidParameter(f"lmf.{name} must be a number >= 0, got {v!r}")
        w = self.ws
        if not (isinstance(w, crown_window) or callable(w)
                or (isinstance(w, (int, float)) and np.isfinite(w) and w > 0)):
            raise InvalidParameter(f"lmf.ws must be a positive number, a function of height or a crown_window, got {w!r}")


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


def _ws_cells(ws, h, res, cover=None):
    if isinstance(ws, crown_window):
        w = ws.diameter(h, cover)
    else:
        w = ws(h) if callable(ws) else np.full(np.shape(h), float(ws))
    d = np.maximum(np.round(np.asarray(w) / res).astype(np.int64), 1)
    return d | 1  # odd diameters keep the window centred


def _lmf_raster(chm: Raster, a: lmf) -> dict[str, np.ndarray]:
    g = chm.grid
    raw = np.nan_to_num(chm.data.astype(np.float64), nan=0.0)
    z = ndimage.gaussian_filter(raw, a.smooth / g.res) if a.smooth > 0 else raw
    cand = z >= a.hmin
    d = _ws_cells(a.ws, z, g.res, canopy_cover(chm) if isinstance(a.ws, crown_window) else None)
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
    if isinstance(a.ws, crown_window):
        # cover of the points: the share of them above 2 m in each lattice cell
        cover = _lattice_share(p.x, p.y, p.z > 2.0, COVER_CELL)[keep]
        ws = a.ws.diameter(z, cover)
    else:
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


def apex_heights(points: Points, tops: dict[str, np.ndarray], grid: Grid, radius: float = 1.5,
                 rings: int = 3) -> np.ndarray:
    """Apex height of each top: its highest return raised by the crown's slope times the
    expected distance between the apex and the return nearest to it.

    The highest return lies below a conifer's apex: no pulse hits the apex exactly,
    and the nearest one lands about half a point spacing away (``spacing / 2``, the
    spacing of the first returns on the crowns), where a cone is ``slope x spacing / 2`` lower.  The slope is fitted to the crown's upper
    envelope: the highest first return in each of ``rings`` rings out to ``radius``
    metres from the highest return.  On both truth families this takes the height bias
    from -0.56 ... -1.01 m to -0.54 ... +0.29 m (bench/accuracy.py, ``apex`` columns);
    ``height`` (the highest return, lidR's and most tools' definition) is kept beside
    it (and is the floor of the apex).  ``grid`` is the CHM's grid, on whose lattice the
    spacing is measured (:func:`~.surface.point_spacing`).  Written here: no library
    fits crown tops.
    """
    from .surface import point_spacing

    h = np.asarray(tops["height"], float)
    out = h.copy()
    if not len(h):
        return out
    crown = points.first & (points.z > 2.0)  # the spacing of the returns on the crowns
    trow, tcol, _ = grid.cell_of(np.asarray(tops["x"], float), np.asarray(tops["y"], float))
    spacing = point_spacing(points.x[crown], points.y[crown], grid)[np.clip(trow, 0, grid.nrow - 1),
                                                                     np.clip(tcol, 0, grid.ncol - 1)]
    fr = points.first & (points.z > 1.0)
    px, py, pz = points.x[fr], points.y[fr], points.z[fr]
    if not len(px):
        return out
    ox, oy = float(px.min()), float(py.min())
    kd = cKDTree(np.column_stack((px - ox, py - oy)))
    tx, ty = np.asarray(tops["x"], float) - ox, np.asarray(tops["y"], float) - oy
    near = kd.query_ball_point(np.column_stack((tx, ty)), 0.75, workers=-1)
    edges = np.linspace(0.0, radius, rings + 1)
    for i, j in enumerate(near):
        if not j:
            continue
        j = np.asarray(j)
        k = j[np.argmax(pz[j])]
        cx, cy = px[k] - ox, py[k] - oy
        jj = np.asarray(kd.query_ball_point([cx, cy], radius))
        d = np.hypot(px[jj] - ox - cx, py[jj] - oy - cy)
        ring = np.digitize(d, edges[1:-1])
        env_d, env_z = [], []
        for r in range(rings):
            m = (ring == r) & (d > 0)
            if m.any():
                q = np.argmax(np.where(m, pz[jj], -np.inf))
                env_d.append(d[q])
                env_z.append(pz[jj][q])
        slope = 0.0
        if len(env_d) >= 2 and np.ptp(env_d) > 0:
            slope = max(-np.polyfit(env_d, env_z, 1)[0], 0.0)
        out[i] = pz[k] + slope * 0.5 * float(spacing[i])
    return np.maximum(out, h)
