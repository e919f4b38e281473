"""Every step on the points of one buffered tile, keeping what lies in its core.

:func:`process_tile` makes the raster windows of the core, the trees whose top is in the
core (so a tree on a border is found once) with their whole crowns, the grid metrics of
the core's cells and the counts.  It only needs the points of one buffered tile, so a
tile can run alone on another worker (see :mod:`.parts`).  :func:`ground_and_heights`,
the first steps (noise, ground, terrain model, heights), is shared with the plot metrics
and the point writer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from . import crowns as crownsmod
from . import metrics as metricsmod
from .errors import InvalidParameter, NoGroundPoints
from .footprint import OCCUPANCY_CELL
from .grid import Grid, Raster
from .ground import classify_ground, classify_noise, drop_noise
from .params import Params
from .points import GROUND, Points
from .surface import canopy_surfaces, max_per_cell
from .terrain import GroundModel, normalize_height
from .tiling import Bounds, in_core
from .trees import locate_trees, tree_heights

ALL_PRODUCTS = frozenset({"dtm", "chm", "trees", "crowns", "grid_metrics"})
TREE_FIELDS = ("x", "y", "height", "apex_height", "crown_area", "crown_diameter")


@dataclass
class TileResult:
    """What one tile contributes to the scan's products (metre frame)."""

    core: Bounds
    dtm: Raster | None = None
    chm: Raster | None = None
    metrics: Raster | None = None  # (bands, rows, cols)
    trees: dict[str, np.ndarray] = field(default_factory=lambda: {k: np.empty(0) for k in TREE_FIELDS})
    crowns: list = field(default_factory=list)  # shapely polygons, aligned with trees
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


class _Laps:
    """Seconds spent in each step, summed by name."""

    def __init__(self, into: dict):
        self.into, self.t = into, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = self.into.get(name, 0.0) + now - self.t
        self.t = now


def ground_and_heights(points: Points, params: Params, buffer: float = 0.0, laps: _Laps | None = None, *,
                       heights: bool = True) -> tuple[Points, GroundModel | None, Points | None]:
    """Noise removed and ground classified, the terrain model and the height-normalised points
    (model and heights None when there is no ground point; heights None unless ``heights``).
    ``buffer`` > 0 limits the terrain model's reach to a tile's buffer, so that a core sees the
    same ground in its tile as in the whole scan."""
    laps = laps or _Laps({})
    pts = drop_noise(points)
    if params.noise is not None and len(pts):
        pts = drop_noise(classify_noise(pts, params.noise))
    laps("noise")
    if not len(pts):
        return pts, None, None
    try:
        pts = classify_ground(pts, params.ground, reuse=params.reuse_ground)
    except NoGroundPoints:
        return pts, None, None
    laps("ground")
    if not heights:
        return pts, None, None
    g = pts.classification == GROUND
    model = GroundModel(pts.x[g], pts.y[g], pts.z[g], params.dtm.within(buffer))
    laps("tin")
    norm = normalize_height(pts, model, zmin=params.zmin, hmax=params.hmax)
    laps("normalize")
    return pts, model, norm


def process_tile(points: Points, core: Bounds, params: Params,
                 products: Iterable[str] = ALL_PRODUCTS) -> TileResult:
    """Run every step on the points of one buffered tile and keep the core's share.

    Parameters
    ----------
    points : Points
        The tile's points *with* its buffer (metre frame).
    core : (minx, miny, maxx, maxy)
        The tile's core on the metrics lattice.
    params : Params
        With the scan's CHM cell (:meth:`.params.Params.for_scan`): every tile of a scan shares it.
    products : subset of {"dtm", "chm", "trees", "crowns", "grid_metrics"}
    """
    if params.chm_res is None:
        raise InvalidParameter("the CHM cell is chosen per scan (Params.for_scan) before its tiles run")
    products = set(products)
    res = TileResult(core=core)
    laps = _Laps(res.timings)
    stats = res.stats
    incore = in_core(points.x, points.y, core)
    stats["points"] = int(incore.sum())
    stats["occupied_m2"] = _occupied_m2(points.x[incore], points.y[incore], core, OCCUPANCY_CELL)
    pts, model, norm = ground_and_heights(points, params, params.buffer, laps)
    if model is None:
        stats.update(ground=0, noise=stats["points"] if not len(pts) else 0, first=0, first_above2=0,
                     no_ground=True)
        return res
    if "dtm" in products:
        dg = Grid.covering(core, params.dtm_res)
        res.dtm = Raster(model.on_grid(dg).astype(np.float32), dg, "dtm")
        laps("dtm")
    c = in_core(norm.x, norm.y, core)
    first = norm.return_number <= 1
    stats.update(
        ground=int((c & (norm.classification == GROUND)).sum()),
        first=int((c & first).sum()),
        first_above2=int((c & first & (norm.z > 2)).sum()),
        noise=stats["points"] - int(c.sum()),
        no_ground=False,
    )
    if products & {"chm", "trees", "crowns"}:
        _canopy_and_trees(norm, core, params, products, res, laps)
    if "grid_metrics" in products:
        res.metrics = _grid_metrics(norm.subset(c), core, params)
        laps("metrics")
    return res


def _occupied_m2(x: np.ndarray, y: np.ndarray, core: Bounds, res: float) -> float:
    """Area of the core's ``res`` lattice cells that hold a point: the footprint's share of the
    core, measured as :func:`.footprint.footprint` measures a scan (with 0.5 m cells a scan of
    1.5 points/m² covered a third of its footprint, and its stems/ha read three times the
    report's)."""
    g = Grid.covering(core, res)
    r, c, inside = g.cell_of(x, y)
    return float(np.count_nonzero(np.bincount((r * g.ncol + c)[inside], minlength=1))) * res * res


def _canopy_and_trees(norm: Points, core: Bounds, params: Params, products: set[str], res: TileResult,
                      laps: _Laps) -> None:
    cg = Grid.covering(core, params.chm_res)
    # the buffered CHM grid must contain the core grid
    bg = Grid.covering((min(norm.x.min(), cg.bounds[0]), min(norm.y.min(), cg.bounds[1]),
                        max(norm.x.max(), cg.bounds[2]), max(norm.y.max(), cg.bounds[3])), params.chm_res)
    chm, surface, peaks = canopy_surfaces(norm, algorithm=params.chm, grid=bg)
    laps("chm")
    if "chm" in products:
        res.chm = chm.crop(cg)
    if not products & {"trees", "crowns"}:
        return
    tops = locate_trees(peaks, params.trees)
    tops["height"], tops["apex_height"] = tree_heights(norm, tops)
    tops = {k: v[tops["height"] >= params.trees.hmin] for k, v in tops.items()}  # hmin holds for the published height
    laps("trees")
    mine = in_core(tops["x"], tops["y"], core)
    labels = crownsmod.segment_crowns(surface, tops, params.crowns)
    area, diam = crownsmod.crown_stats(labels, bg.res, len(tops["x"]))
    tops.update(crown_area=area, crown_diameter=diam)
    res.trees = {k: tops[k][mine] for k in TREE_FIELDS}
    if "crowns" in products and mine.any():
        idx = np.flatnonzero(mine)
        keep = np.zeros(len(tops["x"]) + 1, bool)
        keep[idx + 1] = True
        polys = crownsmod.crown_polygons(np.where(keep[labels], labels, 0), bg)
        res.crowns = [polys.get(int(i)) for i in idx]
    laps("crowns")


def _grid_metrics(cp: Points, core: Bounds, params: Params) -> Raster:
    """The metrics of the core's points per metrics cell, one band per metric."""
    mg = Grid.covering(core, params.metrics_res)
    row, col, inside = mg.cell_of(cp.x, cp.y)
    cp = cp.subset(inside)
    gi = (row * mg.ncol + col)[inside]
    rg = Grid.covering(core, params.rumple_res)
    dsm = max_per_cell(cp.x, cp.y, np.maximum(cp.z, 0.0), rg)
    factor = int(round(params.metrics_res / params.rumple_res))
    rum = metricsmod.rumple_per_cell(dsm, factor, params.rumple_res).ravel()
    m = metricsmod.group_metrics(cp, gi, mg.nrow * mg.ncol, dsm_rumple=rum)
    arr = np.stack([m[k].reshape(mg.shape) for k in metricsmod.METRIC_NAMES]).astype(np.float32)
    return Raster(arr, mg, "grid_metrics")
