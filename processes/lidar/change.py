"""Change between two acquisitions of one forest: canopy lost, gained and grown.

Given the canopy height models of two runs (or two scans of the same area from
different years) and their trees, :func:`compare` gives

- the CHM difference raster (after − before) on the overlap of the two grids;
- a change-class raster (:data:`CLASSES`) with the area of every class: canopy lost
  (harvest, windthrow, disturbance), canopy gained (ingrowth, gap closure), canopy that
  grew, stable canopy and open ground;
- per-tree height growth of trees matched one-to-one between the two runs, with the
  counts of trees lost and new.

Loss and gain masks are cleaned of what is not change: a CHM difference of two scans
with fresh point noise is noisy along crown edges (a half-covered cell is canopy in one
scan and ground in the other), in pits that one scan's pulses went through, and in the
valleys between crowns. Those differences are one or two cells wide; a morphological
opening removes them, and patches smaller than ``min_area`` are dropped, so what remains
is change a forester would map. The CHM is the highest return of each cell, so a crown
that covers part of a cell makes the whole cell canopy: a felled crown's cells overstate
its area by about half a cell all round. The area of a loss or gain patch therefore
counts its outline cells (those with a 4-neighbour outside the patch) at half their area,
as the area of a digitised shape is estimated (its interior plus half its boundary).

Pure functions of arrays (numpy, scipy, scikit-image); north-up grids given as affine
transforms in the CRS's units, heights in metres.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from rasterio.transform import Affine
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .errors import IncompatibleInputs, InvalidParameter

NODATA, STABLE, LOST, GAINED, GROWTH, OPEN = 0, 1, 2, 3, 4, 5
CLASSES = {NODATA: "nodata", STABLE: "stable_canopy", LOST: "canopy_lost", GAINED: "canopy_gained",
           GROWTH: "growth", OPEN: "no_canopy"}
# the colours of the classes, in the change COG's colour table and on the map (nodata transparent)
CLASS_COLORS = {STABLE: (45, 106, 79, 255), LOST: (215, 48, 39, 255), GAINED: (69, 117, 180, 255),
                GROWTH: (166, 217, 106, 255), OPEN: (224, 224, 214, 255)}


@dataclass(frozen=True)
class ChangeParams:
    """Thresholds of the change map and of the tree matching.

    The defaults hold on the project's simulated open, dense and two-layer (``HARD``)
    stands and on a forest of the independent truth family (tests/unit/lidar/test_change.py
    prints the figures: canopy lost within −2.6…+1.4 % of the truth, median growth within
    0.05 m):

    ``hmin`` 5 m: canopy is what stands above 5 m. Shrubs and regrowth under 2–3 m are not
    canopy, and the crown edges of canopy trees are well above it (a conifer's crown base
    is ~0.45 of its height, a broadleaf's outline ~0.7), so a felled crown is lost over
    its whole area, not only its top.
    ``drop`` 3 m: a cell is lost (gained) when its height fell (rose) by more. Growth over
    a few years is well below it; a felled tree drops by its crown base height (≥ 6 m in
    canopy trees). The noise of a difference of two 0.5 m CHMs on steep crown flanks is of
    that order too, but in thin lines and single cells that the opening removes.
    ``growth_min`` 0.5 m: canopy whose difference, median-filtered over 3 × 3 cells (the
    difference of two scans' 0.5 m CHMs has a robust spread of ~0.4 m per cell in the
    truth tests), rose by at least this much is ``growth``.
    ``opening`` 1 m: radius of the disk of the morphological opening of the loss and gain
    masks; it erases features narrower than 2 m (crown-edge rings, inter-crown valleys,
    single pits) and keeps felled crowns (canopy crowns are ~3 m wide and more).
    ``min_area`` 10 m²: loss or gain patches smaller than this are removed. A lone felled
    crown of radius ≥ 2 m (≥ 12 m², most canopy trees of open stands) is kept; the smallest
    crowns of dense stands (radius ~1.5 m) count when felled with a neighbour, as in any
    harvest; true loss missed after the cleaning was 0.2 % (open) and 1.5 % (dense) of it.
    ``match_rel`` 0.5, ``match_min`` 1 m, ``match_max`` 3 m: two tops are the same tree
    when they lie within ``match_rel`` × the larger crown radius, but at least ``match_min``
    (two detections of one top differ by up to a cell or two) and at most ``match_max``.
    ``max_dh`` 5 m: pairs whose heights differ by more are different trees (an understory
    tree exposed by a felled neighbour), not growth.
    """

    hmin: float = 5.0
    drop: float = 3.0
    growth_min: float = 0.5
    opening: float = 1.0
    min_area: float = 10.0
    match_rel: float = 0.5
    match_min: float = 1.0
    match_max: float = 3.0
    max_dh: float = 5.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidParameter(f"{f.name} must be a number >= 0, got {v!r}")
        if self.drop <= 0 or self.match_min <= 0:
            raise InvalidParameter("drop and match_min must be > 0")
        if self.match_max < self.match_min:
            raise InvalidParameter(f"match_max ({self.match_max}) must be >= match_min ({self.match_min})")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# one line per parameter (the process inputs): (description, largest sensible value)
PARAMETERS = {
    "hmin": ("Canopy is what stands above this height (m)", 100.0),
    "drop": ("A cell is lost (gained) canopy when its height fell (rose) by more than this (m)", 100.0),
    "growth_min": ("Canopy whose median-filtered height rose by at least this grew (m)", 50.0),
    "opening": ("Radius of the opening that removes thin loss/gain artefacts (m)", 50.0),
    "min_area": ("Loss and gain patches smaller than this are dropped (m²)", 1e6),
    "match_rel": ("Tops are the same tree within this share of the larger crown radius", 5.0),
    "match_min": ("... but at least this distance (m)", 20.0),
    "match_max": ("... and at most this distance (m)", 50.0),
    "max_dh": ("Pairs whose heights differ by more are different trees (m)", 100.0),
}


@dataclass
class ChangeResult:
    """What :func:`compare` found (arrays on ``transform``, in the CRS of the inputs)."""

    diff: np.ndarray              # float32, after − before, NaN where either is missing
    classes: np.ndarray           # uint8, keys of CLASSES
    transform: Affine
    areas: dict[str, dict[str, float]]
    trees: dict[str, float | int | None]
    pairs: tuple[np.ndarray, np.ndarray]   # indices of matched trees in before / after

    def summary(self) -> dict:
        """JSON-ready figures: areas per class and tree growth statistics."""
        return {"areas": self.areas, "trees": self.trees, "shape": list(self.diff.shape),
                "resolution": abs(self.transform.a)}


def _north_up(t: Affine, name: str) -> tuple[float, float, float]:
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0 or not math.isclose(t.a, -t.e, rel_tol=1e-6):
        raise InvalidParameter(f"the {name} CHM must be on a north-up grid of square cells")
    return t.a, t.c, t.f


def _sample(data: np.ndarray, t: Affine, dst: Affine, shape: tuple[int, int]) -> np.ndarray:
    """``data`` on the grid ``dst``: a window when both share a lattice, else bilinear at cell centres."""
    res, x0, y0 = _north_up(t, "input")
    col = (dst.c - x0) / res
    row = (y0 - dst.f) / res
    if math.isclose(res, dst.a, rel_tol=1e-9) and abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
        r, c = int(round(row)), int(round(col))
        return data[r:r + shape[0], c:c + shape[1]].astype(np.float32)
    ys = row + (np.arange(shape[0]) + 0.5) * dst.a / res - 0.5
    xs = col + (np.arange(shape[1]) + 0.5) * dst.a / res - 0.5
    rr, cc = np.meshgrid(ys, xs, indexing="ij")
    out = ndimage.map_coordinates(data.astype(np.float64), [rr, cc], order=1, mode="nearest")
    return out.astype(np.float32)


def align(before: np.ndarray, before_transform: Affine, after: np.ndarray, after_transform: Affine,
          nodata: float | None = None) -> tuple[np.ndarray, np.ndarray, Affine]:
    """Both CHMs on one grid over their overlap (NaN where a CHM has no value).

    The grid has the coarser of the two cell sizes, on the lattice of the CHM that has it
    (the before one when both do). CHMs of the engine share a global lattice, so two runs at
    one resolution are compared cell for cell without resampling; other grids are sampled
    bilinearly at the cell centres (the engine's CHM is the canopy surface at cell centres).

    Raises
    ------
    IncompatibleInputs
        When the two grids do not overlap.
    """
    ra, xa, ya = _north_up(before_transform, "before")
    rb, xb, yb = _north_up(after_transform, "after")
    a = np.where(before == nodata, np.nan, before) if nodata is not None else before
    b = np.where(after == nodata, np.nan, after) if nodata is not None else after
    west = max(xa, xb)
    east = min(xa + a.shape[1] * ra, xb + b.shape[1] * rb)
    north = min(ya, yb)
    south = max(ya - a.shape[0] * ra, yb - b.shape[0] * rb)
    res, lx, ly = (ra, xa, ya) if ra >= rb * (1 - 1e-9) else (rb, xb, yb)
    c0 = math.ceil((west - lx) / res - 1e-6)
    c1 = math.floor((east - lx) / res + 1e-6)
    r0 = math.ceil((ly - north) / res - 1e-6)
    r1 = math.floor((ly - south) / res + 1e-6)
    if c1 <= c0 or r1 <= r0:
        raise IncompatibleInputs("the two canopy height models do not overlap")
    dst = Affine(res, 0, lx + c0 * res, 0, -res, ly - r0 * res)
    shape = (r1 - r0, c1 - c0)
    return _sample(a, before_transform, dst, shape), _sample(b, after_transform, dst, shape), dst


def _clean(mask: np.ndarray, radius_cells: float, min_cells: int) -> np.ndarray:
    """Opening by a disk, then patches smaller than ``min_cells`` removed."""
    from skimage.morphology import disk

    r = int(math.floor(radius_cells + 1e-9))
    if r >= 1:
        mask = ndimage.binary_opening(mask, structure=disk(r))
    if min_cells > 1:
        label, _ = ndimage.label(mask)
        sizes = np.bincount(label.ravel())
        sizes[0] = 0
        mask = sizes[label] >= min_cells
    return mask


def change_classes(before: np.ndarray, after: np.ndarray, res: float, params: ChangeParams = ChangeParams(),
                   units_to_metre: float = 1.0) -> np.ndarray:
    """The change class of every cell (uint8, keys of :data:`CLASSES`) of two aligned CHMs.

    ``res`` is the cell size in CRS units (``units_to_metre`` metres each): the opening
    radius and ``min_area`` are in metres and m².
    """
    cell = res * units_to_metre
    valid = np.isfinite(before) & np.isfinite(after)
    a = np.where(valid, before, 0.0).astype(np.float32)      # float32: half the memory, twice the speed
    b = np.where(valid, after, 0.0).astype(np.float32)
    d = b - a
    min_cells = int(math.ceil(params.min_area / (cell * cell) - 1e-9))
    lost = _clean(valid & (a >= params.hmin) & (d <= -params.drop), params.opening / cell, min_cells)
    gained = _clean(valid & (b >= params.hmin) & (d >= params.drop), params.opening / cell, min_cells) & ~lost
    canopy = valid & (np.maximum(a, b) >= params.hmin)
    smooth = ndimage.median_filter(d, size=3, mode="nearest")
    out = np.full(before.shape, NODATA, np.uint8)
    out[valid] = OPEN
    out[canopy] = STABLE
    out[canopy & (smooth >= params.growth_min)] = GROWTH
    out[gained & valid] = GAINED
    out[lost & valid] = LOST
    return out


def class_areas(classes: np.ndarray, res: float, units_to_metre: float = 1.0) -> dict[str, dict[str, float]]:
    """Area of every class: ``cells``, ``m2`` and ``ha``.

    Lost and gained canopy are patches whose outline cells are partly covered (see the
    module's docstring): their ``m2`` counts outline cells at half their area, and
    ``m2_cells`` is the plain cell count's area. The other classes are cell counts.
    """
    cell = (res * units_to_metre) ** 2
    counts = np.bincount(classes.ravel(), minlength=len(CLASSES)).astype(float)
    plain = counts.copy()
    for k in (LOST, GAINED):
        mask = classes == k
        inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
        counts[k] -= 0.5 * np.count_nonzero(mask & ~inner)
    out = {}
    for k, name in CLASSES.items():
        out[name] = {"cells": int(plain[k]), "m2": float(counts[k] * cell), "ha": float(counts[k] * cell / 1e4)}
        if k in (LOST, GAINED):
            out[name]["m2_cells"] = float(plain[k] * cell)
    return out


def pair_trees(xa: np.ndarray, ya: np.ndarray, ha: np.ndarray, xb: np.ndarray, yb: np.ndarray, hb: np.ndarray,
               ra: np.ndarray | None = None, rb: np.ndarray | None = None,
               params: ChangeParams = ChangeParams()) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of the trees of two runs; indices (into a, into b) of the pairs.

    Candidate pairs lie within ``match_rel`` × the larger crown radius (clipped to
    ``[match_min, match_max]``; ``match_min`` where no radius is known) and differ in
    height by at most ``max_dh``. Among them the assignment minimises the total distance
    (scipy's ``linear_sum_assignment``), solved per connected group of candidates so that
    it scales to millions of trees.
    """
    na, nb = len(xa), len(xb)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    if na == 0 or nb == 0:
        return empty
    pa = np.column_stack([xa, ya])
    pb = np.column_stack([xb, yb])
    sdm = cKDTree(pa).sparse_distance_matrix(cKDTree(pb), params.match_max, output_type="ndarray")
    i, j, dist = sdm["i"].astype(np.int64), sdm["j"].astype(np.int64), sdm["v"]

    def radius(r, n):
        return np.full(n, np.nan) if r is None else np.asarray(r, float)

    r = np.fmax(radius(ra, na)[i], radius(rb, nb)[j])
    thr = np.clip(np.where(np.isfinite(r), params.match_rel * r, params.match_min), params.match_min,
                  params.match_max)
    keep = (dist <= thr) & (np.abs(np.asarray(hb, float)[j] - np.asarray(ha, float)[i]) <= params.max_dh)
    i, j, dist = i[keep], j[keep], dist[keep]
    if not len(i):
        return empty
    graph = coo_matrix((np.ones(len(i)), (i, na + j)), shape=(na + nb, na + nb))
    _, label = connected_components(graph, directed=False)
    comp = label[i]
    sizes = np.bincount(comp)
    single = sizes[comp] == 1                      # one candidate pair in its group: taken as it is
    out_a, out_b = [i[single]], [j[single]]
    multi = np.flatnonzero(~single)
    order = multi[np.argsort(comp[multi], kind="stable")]
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    for group in np.split(order, bounds) if len(order) else []:
        ua, ia = np.unique(i[group], return_inverse=True)
        ub, ib = np.unique(j[group], return_inverse=True)
        cost = np.full((len(ua), len(ub)), 1e9)
        cost[ia, ib] = dist[group]
        rows, cols = linear_sum_assignment(cost)
        ok = cost[rows, cols] < 1e9
        out_a.append(ua[rows[ok]])
        out_b.append(ub[cols[ok]])
    a_idx, b_idx = np.concatenate(out_a), np.concatenate(out_b)
    order = np.argsort(a_idx, kind="stable")
    return a_idx[order], b_idx[order]


def growth_stats(ha: np.ndarray, hb: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> dict:
    """Height growth of matched trees (median, mean, spread) and trees lost / new."""
    ia, ib = pairs
    g = np.asarray(hb, float)[ib] - np.asarray(ha, float)[ia]
    stats: dict = {"before": int(len(ha)), "after": int(len(hb)), "matched": int(len(ia)),
                   "lost": int(len(ha) - len(ia)), "new": int(len(hb) - len(ib))}
    if len(g):
        q25, q50, q75 = np.percentile(g, [25, 50, 75])
        stats.update(growth_median=float(q50), growth_mean=float(g.mean()), growth_std=float(g.std()),
                     growth_q25=float(q25), growth_q75=float(q75))
    else:
        stats.update(growth_median=None, growth_mean=None, growth_std=None, growth_q25=None, growth_q75=None)
    return stats


def compare(before: np.ndarray, before_transform: Affine, after: np.ndarray, after_transform: Affine,
            trees_before: dict[str, np.ndarray], trees_after: dict[str, np.ndarray],
            params: ChangeParams = ChangeParams(), *, nodata: float | None = None,
            units_to_metre: float = 1.0) -> ChangeResult:
    """Canopy change and tree growth between two runs.

    Parameters
    ----------
    before, after : (rows, cols) arrays
        Canopy height models (m), NaN (or ``nodata``) where unknown, possibly on
        different grids or extents: they are compared on their overlap (:func:`align`).
    before_transform, after_transform : Affine
        North-up geotransforms, in the same CRS.
    trees_before, trees_after : dict of arrays
        ``x``, ``y`` in that CRS, ``height`` and optionally ``crown_radius`` in metres.
    params : ChangeParams
    units_to_metre : float
        Metres per CRS unit (areas and the cleaning are in metres).

    Returns
    -------
    ChangeResult
        Difference and class rasters on the common grid, areas per class, tree growth.
    """
    a, b, transform = align(before, before_transform, after, after_transform, nodata)
    diff = np.where(np.isfinite(a) & np.isfinite(b), b - a, np.nan).astype(np.float32)
    classes = change_classes(a, b, transform.a, params, units_to_metre)
    areas = class_areas(classes, transform.a, units_to_metre)

    def col(t, k):
        return np.asarray(t.get(k, np.empty(0)), float)

    ra = col(trees_before, "crown_radius") if "crown_radius" in trees_before else None
    rb = col(trees_after, "crown_radius") if "crown_radius" in trees_after else None
    pairs = pair_trees(col(trees_before, "x") * units_to_metre, col(trees_before, "y") * units_to_metre,
                       col(trees_before, "height"), col(trees_after, "x") * units_to_metre,
                       col(trees_after, "y") * units_to_metre, col(trees_after, "height"), ra, rb, params)
    stats = growth_stats(col(trees_before, "height"), col(trees_after, "height"), pairs)
    return ChangeResult(diff=diff, classes=classes, transform=transform, areas=areas, trees=stats, pairs=pairs)


def write_products(result: ChangeResult, out_dir, crs, units_to_metre: float = 1.0) -> dict[str, Path]:
    """The difference (float32, m) and change-class (uint8, 0 = nodata, overviews by nearest,
    a colour table of :data:`CLASS_COLORS` and the class names in the band's ``classes`` tag)
    rasters as Cloud Optimized GeoTIFFs ``chm_diff.tif`` and ``change.tif`` in ``out_dir``."""
    from .cog import write_cog
    from .grid import Grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t, u = result.transform, units_to_metre
    grid = Grid(t.c * u, t.f * u, t.a * u, *result.diff.shape)
    diff = write_cog(out / "chm_diff.tif", result.diff[None], grid, crs, ["chm_diff"], to_native=1 / u)
    classes = write_cog(out / "change.tif", result.classes[None], grid, crs, ["change"], to_native=1 / u,
                        dtype="uint8", nodata=NODATA, resampling="nearest", units="class",
                        colormap={NODATA: (0, 0, 0, 0), **CLASS_COLORS},
                        classes={k: v for k, v in CLASSES.items() if k != NODATA})
    return {"chm_diff": diff, "change": classes}
