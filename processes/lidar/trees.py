"""Individual tree detection by local maximum filtering (lidR ``lmf``).

A cell of the CHM (or a point) is a tree top when it is the highest within a
circular window of diameter ``ws`` around it and at least ``hmin`` high.
``ws`` is a number or a function of height, so tall trees get wide windows
and short trees narrow ones (Popescu & Wynne 2004).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .algorithms import Parameters, algorithm, param
from .errors import InvalidParameter
from .grid import Grid, Raster
from .jit import kernel
from .points import Points


COVER_CELL = 20.0  # metres: the lattice cells over which canopy cover is measured for the window


@dataclass(frozen=True)
class crown_window(Parameters):
    """Window diameter from the tree's height and the canopy cover around it:
    ``ws = a + b h + k (1 - cover) h``, clipped to [``wmin``, ``wmax``] metres.

    A crown grows as wide as its neighbours let it.  Where the canopy is closed
    (cover near 1) crowns are as wide as the stem spacing and a top is the highest
    point within a narrow window (``a + b h``: 2 m at 20 m); where it is open, a
    crown is free-grown and its width follows height (open-grown conifers are
    about 0.2 h wide, Popescu & Wynne 2004 fit 0.1-0.3 h), so the window widens by
    ``k h`` times the open share.  Cover is the share of CHM cells above 2 m in each
    20 m lattice cell, which a tile and the whole scan measure alike.  Chosen on
    the three truth families (bench/accuracy.py): with ``k = 0`` the open stands
    over-detect (F1 0.92-0.93 on the independent open stands), a window wide
    enough for them (3 + 0.08 h everywhere) loses a tenth of the F1 in the dense
    ones.  With the tops kept :attr:`lmf.crown_share` of their height apart, ``a =
    1.0`` instead of 1.5 gains 0.01-0.04 F1 in every dense stand (the trees on a taller
    neighbour's flank), and ``k`` from 0.35 to 0.45 keeps the two-layer stands'
    dominant crowns whole (multilayer 0.993-0.994; with ``k = 0.2`` 0.977-0.985) with
    every open stand at 0.997-0.999; 0.4 sits in that plateau.

    In dense stands any local-maximum filter on a CHM is recall-limited: the trees it
    misses are mostly visible but stand on a taller neighbour's flank with no peak of
    their own.  Run on the *true* CHM of the independent dense stands, this window gives
    F1 0.83 (0.77 recall); narrower windows, smoothing, an h-maxima filter or extra
    deep-saddle and top-hat peaks each trade that recall for precision (issue 13's note).
    """

    a: float = param(1.0, "Window at height 0 (m)", minimum=0, maximum=30)
    b: float = param(0.05, "Window growth per metre of height under closed canopy", minimum=0, maximum=1)
    k: float = param(0.4, "Extra growth per metre of height times the open share", minimum=0, maximum=1)
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

    ``min_distance``: two stems 1.5 m apart do not both reach the canopy, but a window of
    a few cells lets two tops of one rough crown through (on the real bcts tiles, with
    windows rounded to odd cells, 6.4 % of the trees had a higher top
    closer than 1.5 m, none of lidR's or lasR's).  In both truth families no two visible
    tops are that close (stems are placed apart by their crowns), so suppressing the lower
    of such pairs changes no score there (bench/accuracy.py).

    ``crown_share``: nor do two canopy trees stand closer than half a crown, and a crown is
    about 0.2 h wide (see :class:`crown_window`): of two tops closer than 0.1 times the
    higher one's height (2 m at 20 m), only the higher is a tree.  A window narrow enough
    for dense stands otherwise splits the lobes of wide dominant crowns; with it the
    two-layer stands keep their F1 (bench/accuracy.py: 0.10-0.11 give the same F1 within
    0.002 on every stand, 0.12 loses 0.01 in the dense ones).
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
    min_distance: float = param(1.5, "Of two tops closer than this, only the higher is a tree (m; 0: off)",
                                minimum=0, maximum=20)
    crown_share: float = param(0.1, "Of two tops closer than this share of the higher one's height, only the "
                               "higher is a tree (0: off)", minimum=0, maximum=1)

    def locate(self, chm: Raster | Points) -> dict[str, np.ndarray]:
        return _lmf_points(chm, self) if isinstance(chm, Points) else _lmf_raster(chm, self)


def _footprint(reach: float, shape: str) -> np.ndarray:
    """The window of the cells whose centres lie within ``reach`` cells of the centre."""
    r = int(np.floor(reach + 1e-9))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    if shape == "square":
        return np.ones(xx.shape, bool)
    return xx**2 + yy**2 <= reach**2 + 1e-9


def locate_trees(chm: Raster | Points, algorithm: lmf = lmf()) -> dict[str, np.ndarray]:
    """Tree tops: ``{"x", "y", "height"}`` arrays (metres, metre frame).

    Parameters
    ----------
    chm : Raster or Points
        A canopy height model or height-normalised points.
    algorithm : lmf
    """
    return algorithm.locate(chm)


REACH_STEP = 0.05  # metres: windows are grouped by their reach rounded to this


def _reach_cells(ws, h, res, cover=None):
    """How far, in cells, the window of each cell reaches: half its diameter, measured in
    metres and not rounded to whole cells, so that a window covers the same ground at any
    cell size (at least the 8 neighbouring cells: a top is higher than every cell around
    it).  Windows rounded to an odd number of cells reached 1.0, 0.75 and 1.0 m at 0.5,
    0.75 and 1 m cells for the same 2.5 m diameter, and the trees of 10 m and more on the
    real bcts tiles moved by 14 % between the 0.5 and 0.75 m CHMs; measured in metres
    they move by +6 % and -8 % (bench/consistency.py)."""
    if isinstance(ws, crown_window):
        w = ws.diameter(h, cover)
    else:
        w = ws(h) if callable(ws) else np.full(np.shape(h), float(ws))
    reach = np.asarray(w, float) / 2
    return np.maximum(np.round(reach / REACH_STEP) * REACH_STEP / res, np.sqrt(2))


def _lmf_raster(chm: Raster, a: lmf) -> dict[str, np.ndarray]:
    g = chm.grid
    raw = np.nan_to_num(chm.data.astype(np.float64), nan=0.0)
    z = ndimage.gaussian_filter(raw, a.smooth / g.res) if a.smooth > 0 else raw
    cand = z >= a.hmin
    reach = _reach_cells(a.ws, z, g.res, canopy_cover(chm) if isinstance(a.ws, crown_window) else None)
    is_max = np.zeros(z.shape, bool)
    for r in np.unique(reach[cand]):
        sel = cand & (reach == r)
        mx = ndimage.maximum_filter(z, footprint=_footprint(float(r), a.shape), mode="nearest")
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
    return _apart({"x": x, "y": y, "height": hmax.astype(np.float64)}, z[rows, cols], a.min_distance, a.crown_share)


def _apart(tops: dict[str, np.ndarray], rank: np.ndarray, distance: float, share: float = 0.0) -> dict[str, np.ndarray]:
    """``tops`` without those that have a higher-ranked kept top closer than ``distance`` or
    than ``share`` times that top's rank (its height); visited from the highest down, so a
    chain of close tops keeps every other one."""
    if (distance <= 0 and share <= 0) or len(rank) < 2:
        return tops
    xy = np.column_stack((tops["x"], tops["y"]))
    pairs = cKDTree(xy).query_pairs(max(distance, share * float(rank.max())), output_type="ndarray")
    if not len(pairs):
        return tops
    order = np.lexsort((np.arange(len(rank)), -rank))  # highest first, ties by position
    pos = np.empty(len(rank), np.int64)
    pos[order] = np.arange(len(rank))
    hi = np.where(pos[pairs[:, 0]] < pos[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    lo = pairs[:, 0] + pairs[:, 1] - hi
    near = np.hypot(*(xy[hi] - xy[lo]).T) <= np.maximum(distance, share * rank[hi])
    hi, lo = hi[near], lo[near]
    keep = np.ones(len(rank), bool)
    by_hi = np.argsort(pos[hi], kind="stable")
    for h, low in zip(hi[by_hi], lo[by_hi]):
        if keep[h]:
            keep[low] = False
    return {k: v[keep] for k, v in tops.items()}


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
    return _apart({"x": x[top], "y": y[top], "height": z[top]}, z[top], a.min_distance, a.crown_share)


def tree_heights(points: Points, tops: dict[str, np.ndarray], radius: float = 0.75, fit_radius: float = 1.2,
                 search: float = 0.6, depth: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Height and apex height of each top.

    ``height``: the highest normalised return within ``radius`` of the top (lidR's and most
    tools' definition; a CHM cell holds an interpolated or binned value, the highest return
    near the apex is closer to the tree).  Tops with no return nearby keep their CHM height.

    ``apex``: the height of a cone ``z = H - s d`` fitted (least squares) to the crown's top
    returns.  No pulse hits a conifer's apex exactly: at 8 points/m² the highest first
    return within 0.75 m of a true cone apex lies a median 1.4 m below it (the independent
    dense stand).  The fitted points are the crown's upper envelope, the highest first return
    in each of 8 sectors x 0.3 m rings out to ``fit_radius`` metres from the highest return,
    no higher than it and less than ``depth`` below it (deeper returns passed through the
    crown); the apex may lie up to ``search`` metres from the highest return (searched on a
    0.1 m lattice, the position with the least squared error wins).  A cone fits the top of
    a paraboloid crown as well, slightly high (+0.3 m there); fitting both shapes and keeping
    the better one was worse overall.  Chosen on both truth families (bench/accuracy.py,
    ``apex`` columns): against the highest return it takes the height RMSE from 0.26-1.76 m
    to 0.27-1.37 m and the bias from -0.13 ... -1.01 m to -0.19 ... +0.23 m over nine
    forests (five independent, four own); the earlier correction (envelope slope x half the
    point spacing) left 0.32-1.57 m and -0.57 ... +0.21 m.  What remains at 8 points/m² in
    dense stands is in the data: with the true apex position given, the cone fit still
    misses by -2.2 m or more on a tenth of the cones (a median 8 crown returns within 1.2 m).  The apex is never below ``height`` nor more than
    ``depth`` above it.  Written here (a numba loop over the points around each top): no
    library fits crown tops.
    """
    h = np.asarray(tops["height"], float).copy()
    apex = h.copy()
    if not len(h) or not len(points):
        return h, apex
    sel = np.flatnonzero(points.z >= max(np.min(h) - depth, 0.0))
    if len(sel):
        b = Grid.covering((float(points.x[sel].min()), float(points.y[sel].min()), float(points.x[sel].max()),
                           float(points.y[sel].max())), radius)
        r, c, _ = b.cell_of(points.x[sel], points.y[sel])
        order = np.argsort(r * b.ncol + c, kind="stable")
        sel = sel[order]
        starts = np.searchsorted((r * b.ncol + c)[order], np.arange(b.nrow * b.ncol + 1))
        offsets = np.arange(-search, search + 1e-9, 0.1)
        ax, ay = (a.ravel() for a in np.meshgrid(offsets, offsets))
        inside = ax**2 + ay**2 <= search**2 + 1e-9
        _crown_tops(points.x[sel], points.y[sel], points.z[sel], points.first[sel], starts, b.x0, b.y0, radius,
                    b.nrow, b.ncol, np.asarray(tops["x"], float), np.asarray(tops["y"], float), fit_radius, depth,
                    ax[inside], ay[inside], h, apex)
    return h, apex


_SECTORS, _RING = 8, 0.3  # the envelope's bins: sectors around the highest return x rings (m)


@kernel
def _crown_tops(px, py, pz, first, starts, x0, y0, cs, nrow, ncol, tx, ty, fit_radius, depth, ax, ay,
                height, apex):  # pragma: no cover
    """For each top: the highest point within ``cs`` (points bucketed in ``cs`` cells, CSR
    ``starts``) into ``height`` and ``apex``, then the apex of the least-squares cone through
    the crown's upper envelope (see tree_heights) over the candidate apex offsets ``ax, ay``
    into ``apex``."""
    reach = int(np.ceil(fit_radius / cs))
    nring = int(fit_radius / _RING) + 1
    nbin = _SECTORS * nring
    bz = np.empty(nbin + 1)
    bx = np.empty(nbin + 1)
    by = np.empty(nbin + 1)
    for i in range(len(tx)):
        c0 = int(np.floor((tx[i] - x0) / cs))
        r0 = int(np.floor((y0 - ty[i]) / cs))
        best = -1
        for r in range(max(r0 - 1, 0), min(r0 + 2, nrow)):
            for c in range(max(c0 - 1, 0), min(c0 + 2, ncol)):
                cell = r * ncol + c
                for k in range(starts[cell], starts[cell + 1]):
                    dx, dy = px[k] - tx[i], py[k] - ty[i]
                    if dx * dx + dy * dy <= cs * cs and (best < 0 or pz[k] > pz[best]):
                        best = k
        if best < 0:
            continue
        top_x, top_y, top_z = px[best], py[best], pz[best]
        height[i] = top_z
        apex[i] = top_z
        bz[:] = -np.inf
        c0 = int(np.floor((top_x - x0) / cs))
        r0 = int(np.floor((y0 - top_y) / cs))
        for r in range(max(r0 - reach, 0), min(r0 + reach + 1, nrow)):
            for c in range(max(c0 - reach, 0), min(c0 + reach + 1, ncol)):
                cell = r * ncol + c
                for k in range(starts[cell], starts[cell + 1]):
                    if not first[k] or pz[k] > top_z or pz[k] <= top_z - depth:
                        continue
                    dx, dy = px[k] - top_x, py[k] - top_y
                    d = np.sqrt(dx * dx + dy * dy)
                    if d > fit_radius:
                        continue
                    sector = int((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * _SECTORS) % _SECTORS
                    q = sector * nring + min(int(d / _RING), nring - 1)
                    if pz[k] > bz[q]:
                        bz[q], bx[q], by[q] = pz[k], px[k], py[k]
        n = 0
        for q in range(nbin):
            if bz[q] > -np.inf:
                bz[n], bx[n], by[n] = bz[q], bx[q], by[q]
                n += 1
        bz[n], bx[n], by[n] = top_z, top_x, top_y   # the highest return counts twice: the cone
        n += 1                                      # passes close to it
        if n < 5:
            continue
        best_rss, best_h = np.inf, top_z
        for j in range(len(ax)):
            cx, cy = top_x + ax[j], top_y + ay[j]
            sd = sz = sdd = sdz = 0.0
            for q in range(n):
                d = np.sqrt((bx[q] - cx) ** 2 + (by[q] - cy) ** 2)
                sd += d
                sz += bz[q]
                sdd += d * d
                sdz += d * bz[q]
            var = n * sdd - sd * sd
            s = max(-(n * sdz - sd * sz) / var, 0.0) if var > 1e-12 else 0.0
            hh = (sz + s * sd) / n
            rss = 0.0
            for q in range(n):
                d = np.sqrt((bx[q] - cx) ** 2 + (by[q] - cy) ** 2)
                rss += (bz[q] - (hh - s * d)) ** 2
            if rss < best_rss:
                best_rss, best_h = rss, hh
        apex[i] = min(max(best_h, top_z), top_z + depth)
