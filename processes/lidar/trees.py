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

from .algorithms import Parameters, algorithm, param
from .errors import InvalidParameter
from .grid import Grid, Raster
from .points import Points


COVER_CELL = 20.0  # metres: the lattice cells over which canopy cover is measured for the window


@dataclass(frozen=True)
class crown_window(Parameters):
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

    a: float = param(1.5, "Window at height 0 (m)", minimum=0, maximum=30)
    b: float = param(0.05, "Window growth per metre of height under closed canopy", minimum=0, maximum=1)
    k: float = param(0.2, "Extra growth per metre of height times the open share", minimum=0, maximum=1)
    wmin: float = param(2.0, "Narrowest window (m)", minimum=0, maximum=30)
    wmax: float = param(12.0, "Widest window (m)", minimum=0, maximum=30)

    def __post_init__(self):
        super().__post_init__()
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


@algorithm("trees", default=True)
class lmf(Parameters):
    """Local maximum filter: a cell is a top when it is the highest within its window.

    ``smooth``: the top's height is read from the unsmoothed CHM.  ``prominence``:
    an h-maxima filter; lobes of one broadleaf crown are separated by shallow
    saddles, neighbouring trees by deep ones, so it removes false maxima that a
    window small enough for dense stands lets through.
    """

    ws: float | Callable[[np.ndarray], np.ndarray] | crown_window = param(
        crown_window(), "Window diameter (m): a number, or a crown_window (from height and canopy cover)",
        exclusive_minimum=True, minimum=0, maximum=50, alternatives=(crown_window,), python_only=True)
    hmin: float = param(2.0, "Local maxima lower than this are not trees (m)", minimum=0, maximum=100)
    shape: str = param("circular", "Window shape", "choice", choices=("circular", "square"))
    smooth: float = param(0.0, "Sigma of a Gaussian smoothing of the CHM before the search (m)", minimum=0,
                          maximum=10)
    prominence: float = param(0.0, "A top must rise this much above its saddle to a higher top (m; 0: off)",
                              minimum=0, maximum=50)

    def locate(self, chm: Raster | Points) -> dict[str, np.ndarray]:
        return _lmf_points(chm, self) if isinstance(chm, Points) else _lmf_raster(chm, self)


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
    return algorithm.locate(chm)


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


def _pairs(kd: cKDTree, qx: np.ndarray, qy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(query, point) index pairs of the points within ``radius`` of each query, flattened."""
    nb = kd.query_ball_point(np.column_stack((qx, qy)), radius, workers=-1)
    lens = np.fromiter(map(len, nb), np.int64, len(nb))
    j = np.fromiter(itertools.chain.from_iterable(nb), np.int64, int(lens.sum()))
    return np.repeat(np.arange(len(nb)), lens), j


def _last_per_group(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Index of the element with the largest ``key`` in each group present (sorted by group)."""
    order = np.lexsort((key, group))
    g = group[order]
    last = np.ones(len(g), bool)
    last[:-1] = g[1:] != g[:-1]
    return order[last]


def tree_heights(points: Points, tops: dict[str, np.ndarray], grid: Grid, radius: float = 0.75,
                 envelope: float = 1.5, rings: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Height and apex height of each top.

    ``height``: the highest normalised return within ``radius`` of the top (lidR's and most
    tools' definition; a CHM cell holds an interpolated or binned value, the highest return
    near the apex is closer to the tree).  Tops with no return nearby keep their CHM height.

    ``apex``: the highest return raised by the crown's slope times the expected distance
    between the apex and the return nearest to it.  No pulse hits a conifer's apex exactly;
    the nearest one lands about half a point spacing away (``spacing / 2``, the spacing of
    the first returns on the crowns, measured on ``grid``'s lattice by
    :func:`~.surface.point_spacing`), where a cone is ``slope x spacing / 2`` lower.  The
    slope is fitted (least squares) to the crown's upper envelope: the highest first return
    in each of ``rings`` rings out to ``envelope`` metres from the highest return.  On both
    truth families this takes the height bias from -0.56 ... -1.01 m to -0.54 ... +0.29 m
    (bench/accuracy.py, ``apex`` columns).  The apex is never below ``height``.  Written
    here: no library fits crown tops.
    """
    from .surface import point_spacing

    h = np.asarray(tops["height"], float).copy()
    if not len(h) or not len(points):
        return h, h.copy()
    ox, oy = float(points.x.min()), float(points.y.min())
    tx, ty = np.asarray(tops["x"], float) - ox, np.asarray(tops["y"], float) - oy
    sel = np.flatnonzero(points.z >= max(np.min(h) - 3.0, 0.0))
    sel = sel[_near_tops(points.x[sel] - ox, points.y[sel] - oy, tx, ty, envelope + radius)] if len(sel) else sel
    if not len(sel):
        return h, h.copy()
    px, py, pz = points.x[sel] - ox, points.y[sel] - oy, points.z[sel]
    top_i, j = _pairs(cKDTree(np.column_stack((px, py))), tx, ty, radius)
    if not len(j):
        return h, h.copy()
    best = _last_per_group(top_i, pz[j])  # the highest return of each top that has one
    found, hp = top_i[best], j[best]
    h[found] = pz[hp]
    apex = h.copy()
    # the upper envelope of the crown around each highest return, from its first returns
    first = np.flatnonzero(points.first[sel] & (pz > 1.0))
    if not len(first):
        return h, apex
    top_e, je = _pairs(cKDTree(np.column_stack((px[first], py[first]))), px[hp], py[hp], envelope)
    je = first[je]
    d = np.hypot(px[je] - px[hp][top_e], py[je] - py[hp][top_e])
    ring = np.digitize(d, np.linspace(0.0, envelope, rings + 1)[1:-1])
    ok = d > 0
    top_e, je, d, ring = top_e[ok], je[ok], d[ok], ring[ok]
    env = _last_per_group(top_e * rings + ring, pz[je])  # the highest first return of each ring
    ge, de, ze = top_e[env], d[env], pz[je[env]]
    n = np.bincount(ge, minlength=len(found)).astype(float)
    sd, sz = np.bincount(ge, de, len(found)), np.bincount(ge, ze, len(found))
    sdd, sdz = np.bincount(ge, de * de, len(found)), np.bincount(ge, de * ze, len(found))
    var = n * sdd - sd * sd
    fit = (n >= 2) & (var > 1e-12)
    slope = np.where(fit, -(n * sdz - sd * sz) / np.where(fit, var, 1.0), 0.0)
    crown = points.first & (points.z > 2.0)  # the spacing of the returns on the crowns
    tr, tc, _ = grid.cell_of(tx[found] + ox, ty[found] + oy)
    spacing = point_spacing(points.x[crown], points.y[crown], grid)[np.clip(tr, 0, grid.nrow - 1),
                                                                     np.clip(tc, 0, grid.ncol - 1)]
    apex[found] = h[found] + np.maximum(slope, 0.0) * 0.5 * spacing
    return h, apex


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

