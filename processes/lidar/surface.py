"""Surface and canopy height models (DSM / CHM) from points.

``p2r`` is lidR's point-to-raster: the highest point per cell, each point
optionally replaced by a small circle of 8 points (``subcircle``) to fill
empty cells.  ``pitfree`` is Khosravipour et al. (2014): TINs of the highest
first returns above successive height thresholds, each with its long-edged
triangles removed (``max_edge``), stacked by maximum, which removes the pits
that pulses passing through crowns leave in a max-binned CHM; cells that lie more
than ``fill_drop`` below a first return within ``fill`` point spacings take that
return's height (:func:`fill_cliffs`), which restores the cliff at a crown's base
that the TIN otherwise slopes down to the ground across.

Each layer's TIN is scan-converted onto the CHM grid (:meth:`TIN.rasterize`)
rather than locating every cell in it; a layer that removes few vertices from
the previous one is derived from it by refilling the cavities of the removed
vertices (:func:`_stack_layers`).
"""
from __future__ import annotations

import numpy as np

from .algorithms import Parameters, algorithm, param
from .grid import Grid, Raster
from .jit import kernel
from .points import Points
from .tin import TIN, refill, triangulate


CHM_CELLS = (0.5, 0.8, 1.0)  # m: the cells a run picks from, finest first


def chm_cell(first_density: float, metrics_res: float) -> float:
    """The CHM cell for a scan with ``first_density`` first returns per m² (of its occupied
    area): the finest of :data:`CHM_CELLS` in which most cells hold a first return (Poisson:
    ``first_density * cell² >= ln 2``) and that divides ``metrics_res``; 1.0 m at most.

    Why: a cell that most returns miss is filled by the TIN, and its maxima are the
    interpolation's (at 1.5 pts/m² a 0.5 m cell holds 0.4 returns).  Why not coarser, e.g.
    one return per cell on average: on the real bcts tiles thinned to 10 % of their pulses
    (0.97 first returns/m²) the trees of 10 m and more fell by 10 % at 0.5 m, 14 % at 1.0 m
    and 30 % at 1.25 m (bench/consistency.py): a coarse cell merges neighbouring crowns.
    Why 1.0 m at most, even where most 1 m cells are empty: below 0.7 first returns/m² no
    cell keeps the trees, and the coarser cells lose the most.  On bcts thinned to 2.5 % of
    its pulses (0.24 first returns/m²) the trees of 10 m and more were 2,903 / 2,794 /
    2,748 at 0.5 / 0.8 / 1.0 m and 2,473 / 1,499 at 1.25 / 2.0 m; on the real autzen
    scan thinned to 10 % (about 0.25 first returns/m²) 84 / 84 / 85 and 77 / 52.
    Every truth forest (>= 5 pulses/m²) and the shared real scans (9.7 first returns/m²)
    keep 0.5 m, the cell bench/accuracy.py scores best there (it also halves the DTM error on
    steep slopes, see :class:`.params.Params`); 0.5 m holds from 2.8 first returns/m², 0.8 m
    from 1.1, 1.0 m below.
    """
    spacing = np.sqrt(np.log(2) / max(first_density, 1e-9))
    want = min(max(spacing, CHM_CELLS[0]), CHM_CELLS[-1]) - 1e-9
    fits = (c for c in CHM_CELLS if c >= want and abs(metrics_res / c - round(metrics_res / c)) < 1e-9)
    cell = next(fits, metrics_res / max(1, int(metrics_res // want)))
    return cell if cell <= CHM_CELLS[-1] else metrics_res / np.ceil(metrics_res / CHM_CELLS[-1])


@algorithm("chm")
class p2r(Parameters):
    """Point-to-raster: highest (sub-circled) point per cell."""

    subcircle: float = param(0.0, "Radius of the 8-point circle replacing each point (m)", minimum=0, maximum=5)

    def rasterize(self, points: Points, grid: Grid) -> np.ndarray:
        return self.surfaces(points, grid)[1]

    def surfaces(self, points: Points, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        x, y, z = _subcircle(points.x, points.y, points.z, self.subcircle)
        s = max_per_cell(x, y, z, grid)
        return s, s

    def smoothed(self, surface: np.ndarray, points: Points, grid: Grid) -> np.ndarray:
        return surface


@algorithm("chm", default=True)
class pitfree(Parameters):
    """Pit-free CHM (Khosravipour et al. 2014), lidR parameter names.

    ``max_edge`` (for the 0 layer, for the other layers): lidR's default for the 0
    layer is 0; 3 m is used here so holes in the data stay holes and the long
    triangles along a scan's outer edge (which depend on far-away points) do not
    make a tile differ from the whole scan.  1.5 m for the other layers (lidR's
    example uses 1.5): on both truth families 1.0 m left holes that fall back to a
    lower layer at 8 points/m² (CHM RMSE 5.0-5.2 m on the independent 8 pts/m²
    stands against 2.4-2.8 m with 1.5 m), and 2.0 m bridged real gaps at 20
    points/m² (see bench/accuracy.py).

    ``subcircle`` 0: the cliff fill restores crown edges without raising every
    crown flank by ``subcircle`` x its slope as subcircle does.

    ``fill``: the spacing is measured from the first returns of each 20 m lattice
    cell (:func:`point_spacing`), so a tile and the whole scan agree and one default
    serves 8 and 20 points/m².  1.5 spacings and 4 m: the best of the values
    measured on both truth families (mean CHM RMSE over ten forests 1.07 m against
    2.30 m without it; 1.0 spacing or 2 m drops lift too few crown edges, see the
    closing note of issue 13).

    ``smooth``: the CHM is the surface at cell centres, and where returns are a spacing
    apart the surface between them is not known: a crown edge (a cliff) lies anywhere
    within about a spacing of where the TIN puts it, and a steep conifer flank is off
    by its slope times that.  The estimate with the least squared error is the mean
    over that uncertainty, so the surface is averaged over a Gaussian whose standard
    deviation is ``smooth`` first-return spacings (per 20 m lattice cell, as ``fill``):
    at 20 points/m² that is under half a cell and changes little, at 5-8 points/m² it
    is most of a cell.  Measured over the ten forests of both families
    (bench/accuracy.py, issue 13's note): mean CHM RMSE 1.206 m without it, 1.086 /
    1.037 / 1.041 / 1.053 m at 0.6 / 0.75 / 0.8 / 1.0 spacings, every forest better
    than without.  0.75 sits in the middle of the 0.7-0.8 plateau.  Tree tops and crowns
    are found on the surface before the averaging (:func:`canopy_surfaces`): averaging
    widens crowns (mean |crown area error| 0.20 -> 0.27) and merges close tops.
    """

    thresholds: tuple[float, ...] = param((0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0),
                                          "Height layers triangulated separately (m)", "numbers", minimum=0,
                                          maximum=200)
    max_edge: tuple[float, float] = param((3.0, 1.5), "Longest triangle edge kept (m) for the 0 layer and for "
                                          "the others; 0: no limit", "numbers", length=2, minimum=0, maximum=100)
    subcircle: float = param(0.0, "Radius of the 8-point circle replacing each first return (m)", minimum=0,
                             maximum=5)
    fill: float = param(1.5, "Radius, in point spacings, within which a first return lifts a cell lying more "
                        "than fill_drop below it (0: off)", minimum=0, maximum=10)
    fill_drop: float = param(4.0, "Drop (m) below a nearby first return that marks a cell as a cliff gap",
                             minimum=0, maximum=100)
    max_radius: float = param(10.0, "Triangles with a wider circumcircle are dropped (m)", minimum=0,
                              maximum=1000)
    smooth: float = param(0.75, "Standard deviation of the Gaussian the surface is averaged over, in point "
                          "spacings (0: off)", minimum=0, maximum=5)
    vertex_res: float | None = param(0.25, "Spacing of the TIN vertices, the highest return per vertex cell "
                                     "(m; null: the raster's)", exclusive_minimum=True, minimum=0, maximum=10,
                                     nullable=True)

    def rasterize(self, points: Points, grid: Grid) -> np.ndarray:
        return self.surfaces(points, grid)[1]

    def surfaces(self, points: Points, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        """The stacked layers (tree tops are searched on them) and the same with the cliffs at
        crown bases filled (the surface crowns are segmented on, and averaged into the CHM).

        Tops are not searched after the cliff fill: the fill lifts every cell within ``fill``
        spacings of a return to that return's height, so each lifted return becomes a small
        plateau, and as a scan thins the radius grows and the plateaus multiply into tops.
        On the real bcts tiles (bench/consistency.py) the trees of 10 m and more went from
        9,956 to 13,783 (+38 %) when the scan was thinned to a quarter of its pulses with the
        fill, from 7,747 to 7,374 (-5 %) without it; on both truth families the tree F1 without
        it is as good or better on every forest (dense independent 8 pts/m² 0.778 -> 0.812)."""
        first = points.first
        x, y, z = _subcircle(points.x[first], points.y[first], points.z[first], self.subcircle)
        # the TIN vertices: highest first return per cell, on a grid one cell larger
        # than the target so triangles reach its border
        vr = min(self.vertex_res or grid.res, grid.res)
        k = max(int(round(grid.res / vr)), 1)
        big = Grid(grid.x0 - grid.res, grid.y0 + grid.res, grid.res / k, (grid.nrow + 2) * k, (grid.ncol + 2) * k)
        top = highest_per_cell(x, y, z, big)
        x, y, z = x[top], y[top], z[top]
        peaks = _stack_layers(x, y, z, grid, self)
        if self.fill <= 0:
            return peaks, peaks
        radius = self.fill * point_spacing(points.x[first], points.y[first], grid)
        return peaks, fill_cliffs(peaks, x, y, z, grid, radius, self.fill_drop)

    def smoothed(self, surface: np.ndarray, points: Points, grid: Grid) -> np.ndarray:
        """The surface averaged over a Gaussian of ``smooth`` first-return spacings."""
        if self.smooth <= 0:
            return surface
        first = points.first
        spacing = point_spacing(points.x[first], points.y[first], grid)
        return smooth_by_spacing(surface, self.smooth * spacing / grid.res)


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

    Ties go to the first point; indices come in cell order.
    """
    best = np.full(grid.nrow * grid.ncol, -1, np.int64)
    _highest(x, y, z, grid.x0, grid.y0, grid.res, grid.nrow, grid.ncol, best)
    return best[best >= 0]


@kernel
def _highest(x, y, z, x0, y0, res, nrow, ncol, best):  # pragma: no cover
    """One pass: ``best[cell]`` becomes the first of the highest points in the cell (cells as Grid.cell_of)."""
    for i in range(len(x)):
        col = int(np.floor((x[i] - x0) / res))
        row = int(np.floor((y0 - y[i]) / res))
        if 0 <= col < ncol and 0 <= row < nrow:
            c = row * ncol + col
            if best[c] < 0 or z[i] > z[best[c]]:
                best[c] = i


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
    return canopy_surfaces(points, res, algorithm, grid=grid)[0]


def canopy_surfaces(points: Points, res: float = 0.5, algorithm: p2r | pitfree = pitfree(), *,
                    grid: Grid | None = None) -> tuple[Raster, Raster, Raster]:
    """The CHM (:func:`rasterize_canopy`), the surface before its averaging and the peaks
    surface (see :meth:`pitfree.surfaces`), whose peaks and crown edges are as sharp as the
    returns make them: crowns are segmented on the surface and tree tops found on the peaks
    (on the averaged surface neighbouring tops of a closed canopy merge: F1 on the project's
    dense 8 points/m² stands 0.852 -> 0.836 and 0.807, see pitfree)."""
    if grid is None:
        grid = Grid.covering((points.x.min(), points.y.min(), points.x.max(), points.y.max()), res)
    peaks, surface = algorithm.surfaces(points, grid)
    chm = algorithm.smoothed(surface, points, grid)
    return tuple(Raster(a.astype(np.float32), grid, "chm") for a in (chm, surface, peaks))


SPACING_CELL = 20.0  # metres: the lattice cells over which the point spacing is measured


def point_spacing(x: np.ndarray, y: np.ndarray, grid: Grid, cell: float = SPACING_CELL) -> np.ndarray:
    """Mean spacing (m) of the points ``x, y`` around each cell of ``grid``: 1 / sqrt(density),
    the density measured over the occupied square metres of each ``cell``-sized lattice cell
    (so a cell cut by a scan's or a tile's edge reads the density of its covered part).
    Cells with no point get the median spacing."""
    cg = Grid.covering(grid.bounds, cell)
    k = int(round(cell))
    fine = Grid(cg.x0, cg.y0, cell / k, cg.nrow * k, cg.ncol * k)
    row, col, inside = fine.cell_of(x, y)
    counts = np.bincount(row[inside] * fine.ncol + col[inside], minlength=fine.nrow * fine.ncol)
    counts = counts.reshape(cg.nrow, k, cg.ncol, k)
    n = counts.sum(axis=(1, 3)).astype(np.float64)
    occupied = (counts > 0).sum(axis=(1, 3)) * fine.res**2
    with np.errstate(divide="ignore", invalid="ignore"):
        spacing = np.where(n > 0, 1.0 / np.sqrt(n / np.maximum(occupied, 1e-9)), np.nan)
    if np.isnan(spacing).all():
        return np.full(grid.shape, 1.0)
    spacing = np.where(np.isnan(spacing), np.nanmedian(spacing), spacing)
    cx, cy = grid.centers()
    r, c, _ = cg.cell_of(cx, cy)
    return spacing[np.clip(r, 0, cg.nrow - 1), np.clip(c, 0, cg.ncol - 1)]


def smooth_by_spacing(chm: np.ndarray, sigma_cells: np.ndarray, step: float = 0.1) -> np.ndarray:
    """``chm`` averaged over a Gaussian of ``sigma_cells[cell]`` cells (NaN cells left out of
    the average and left NaN).  A per-cell sigma is quantised to ``step`` cells: one
    normalised filter (scipy) per level present, each cell taking its level's."""
    from scipy import ndimage

    ok = np.isfinite(chm)
    data = np.where(ok, chm, 0.0)
    weight = ok.astype(np.float64)
    level = np.round(np.asarray(sigma_cells, np.float64) / step).astype(np.int64)
    out = np.full(chm.shape, np.nan)
    for q in np.unique(level[ok]):
        sigma = q * step
        cells = ok & (level == q)
        if sigma <= 0:
            out[cells] = chm[cells]
            continue
        # outside the grid is no data (weight 0), so a grid's extent does not change a cell
        num = ndimage.gaussian_filter(data, sigma, truncate=2.0, mode="constant")
        den = ndimage.gaussian_filter(weight, sigma, truncate=2.0, mode="constant")
        out[cells] = num[cells] / den[cells]
    return out.astype(chm.dtype, copy=False)


def fill_cliffs(chm: np.ndarray, x, y, z, grid: Grid, radius: np.ndarray, drop: float) -> np.ndarray:
    """``chm`` with each cell lying more than ``drop`` below the highest point within
    ``radius[cell]`` of its centre raised to that point's height.

    A crown's base is a cliff; the TIN slopes from the outermost crown return down
    to the nearest ground return across it, under-estimating a band of cells at every
    crown's edge (and in the pits the layers leave).  Written here: a per-cell radius
    max filter over scattered points is not in scipy or scikit-image."""
    near = np.full(grid.nrow * grid.ncol, -np.inf)
    _max_within(x, y, z, grid.x0, grid.y0, grid.res, grid.nrow, grid.ncol,
                np.ascontiguousarray(radius, np.float64).ravel(), float(np.max(radius)), near)
    near = near.reshape(grid.shape)
    lift = near - np.nan_to_num(chm, nan=np.inf) > drop
    return np.where(lift, near, chm)


@kernel
def _max_within(x, y, z, x0, y0, res, nrow, ncol, radius, rmax, out):  # pragma: no cover
    """``out[cell]``: the highest z of the points within ``radius[cell]`` of the cell's centre."""
    reach = int(np.ceil(rmax / res)) + 1
    for i in range(len(x)):
        fc = (x[i] - x0) / res - 0.5
        fr = (y0 - y[i]) / res - 0.5
        c0 = int(np.floor(fc))
        r0 = int(np.floor(fr))
        for r in range(max(r0 - reach, 0), min(r0 + reach + 2, nrow)):
            dy = (r - fr) * res
            for c in range(max(c0 - reach, 0), min(c0 + reach + 2, ncol)):
                k = r * ncol + c
                if z[i] <= out[k]:
                    continue
                dx = (c - fc) * res
                if dx * dx + dy * dy <= radius[k] * radius[k]:
                    out[k] = z[i]


REFILL_SHARE = 1.0  # removed vertices per remaining one above which triangulating again is faster (measured)


def _contained(inner: float, outer: float) -> bool:
    """Whether triangles valid under max_edge ``inner`` are all valid under ``outer`` (0: no limit)."""
    return outer == 0 or (inner != 0 and inner <= outer)


def _stack_layers(x, y, z, grid: Grid, algorithm: pitfree) -> np.ndarray:
    """The maximum of the layers' TINs at the cell centres.

    A layer's vertices are the previous layer's minus those below its threshold,
    so its triangulation differs from the previous one only in the cavities
    around the removed vertices (:func:`~.tin.refill`), and only the refilled
    triangles can raise the maximum: the others were rasterised already (when
    the previous layer's edge limit is as loose).  A layer that removes many
    vertices is triangulated again in full.
    """
    out = np.full(grid.shape, np.nan)
    me0, me1 = algorithm.max_edge
    thresholds = sorted(algorithm.thresholds)
    tris = alive = None
    prev_limit = 0.0
    for t in thresholds:
        sel = z >= t
        if int(sel.sum()) < 3:
            break  # the layers above hold no canopy
        limit = me0 if t == thresholds[0] else me1
        step = None
        removed = None if alive is None else alive & ~sel
        if tris is not None and _contained(limit, prev_limit) and removed.sum() <= REFILL_SHARE * sel.sum():
            step = refill(x, y, tris, removed)
        if step is None:  # the first layer, or a full rebuild
            idx = np.flatnonzero(sel)
            local, _ = triangulate(x[idx] - x[idx].min(), y[idx] - y[idx].min(), neighbors=False)
            tris = draw = idx[local]
        else:
            draw, tris = step
        alive, prev_limit = sel, limit
        if not len(draw):
            continue
        layer = TIN(x, y, z, triangles=draw)
        # without long edges (pit-free rule) and wide circumcircles (not decided locally, see terrain.tin)
        np.fmax(out, layer.rasterize(grid, layer.invalid(limit, algorithm.max_radius)), out=out)
    return out
