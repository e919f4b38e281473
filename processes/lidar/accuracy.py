"""Scoring products against forests with known answers.

One scoring rule for every truth family (the project's simulator, the independent
one in ``../shared/data/truth``), as that family's README states it:

- trees: detected tops matched one-to-one to true stems within 1.5 m (optimal
  assignment, scipy's ``linear_sum_assignment``); F1 over the reference trees,
  recall of the understory, height RMSE and bias over matched pairs;
- CHM: RMSE against the true canopy surface over cells where the truth is above
  2 m, after resampling the candidate onto the truth grid (nearest);
- DTM: RMSE against the true terrain over every cell;
- crowns: for matched trees, IoU of the crown polygon with the true crown and the
  relative area error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .grid import Grid, Raster

MATCH_DIST = 1.5


@dataclass
class Truth:
    """What a forest really holds, in one shape for every family (metre frame)."""

    name: str
    family: str
    files: list[Path]
    trees: dict[str, np.ndarray]  # x, y, height, crown_radius, dominant (bool), visible (bool)
    terrain: Raster  # ground elevation at cell centres
    chm: Raster  # canopy height above ground at cell centres
    bounds: tuple[float, float, float, float]
    density: float
    classified: bool
    info: dict = field(default_factory=dict)


def _read_raster(path: Path) -> Raster:
    import rasterio

    with rasterio.open(path) as ds:
        t = ds.transform
        g = Grid(float(t.c), float(t.f), float(t.a), ds.height, ds.width)
        # the file's nodata cells are NaN (a sparse scan's CHM has holes: not -9999 m of canopy)
        return Raster(ds.read(1, masked=True).astype(np.float64).filled(np.nan), g, path.stem)


def load_shared(folder: Path) -> Truth:
    """A forest of the independent family (``truth.json``, ``truth_*.tif``, ``truth_trees.geojson``)."""
    folder = Path(folder)
    info = json.loads((folder / "truth.json").read_text())
    feats = json.loads((folder / "truth_trees.geojson").read_text())["features"]
    xy = np.array([f["geometry"]["coordinates"][:2] for f in feats], float).reshape(-1, 2)
    prop = [f["properties"] for f in feats]
    trees = {
        "x": xy[:, 0], "y": xy[:, 1],
        "height": np.array([p["height"] for p in prop], float),
        "crown_radius": np.array([p["crown_radius"] for p in prop], float),
        "dominant": np.array([p["layer"] == "dominant" for p in prop], bool),
        "visible": np.array([bool(p["visible"]) for p in prop], bool),
    }
    return Truth(name=folder.name, family="independent", files=[folder / f for f in info["files"]], trees=trees,
                 terrain=_read_raster(folder / "truth_terrain.tif"), chm=_read_raster(folder / "truth_chm.tif"),
                 bounds=tuple(info["bounds"]), density=float(info["density"]), classified=bool(info["classes"]),
                 info=info)


def from_simulation(name: str, truth, files: list[Path], res: float = 0.5) -> Truth:
    """The project simulator's :class:`~.synthetic.ForestTruth` in the common shape."""
    g = Grid.covering(truth.bounds, res)
    cx, cy = g.centers()
    t = truth.trees
    trees = {"x": t["x"], "y": t["y"], "height": t["height"], "crown_radius": t["crown_radius"],
             "dominant": ~t["understory"], "visible": t["visible"]}
    p = truth.params
    return Truth(name=name, family="project", files=files, trees=trees,
                 terrain=Raster(truth.ground(cx, cy), g, "terrain"), chm=Raster(truth.canopy(cx, cy), g, "chm"),
                 bounds=truth.bounds, density=float(p["density"]), classified=bool(p.get("classified", True)),
                 info=dict(p))


def match_trees(dx, dy, tx, ty, max_dist: float = MATCH_DIST) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of detected tops to true stems within ``max_dist`` (optimal assignment).

    Only pairs closer than ``max_dist`` enter the assignment (a sparse cost matrix per
    connected cluster would be faster; a dense one over the candidates is enough for
    a few thousand trees)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    dx, dy, tx, ty = (np.asarray(a, float) for a in (dx, dy, tx, ty))
    if not len(dx) or not len(tx):
        return np.empty(0, int), np.empty(0, int)
    pairs = cKDTree(np.column_stack((dx, dy))).query_ball_tree(cKDTree(np.column_stack((tx, ty))), max_dist)
    rows = np.flatnonzero([len(p) > 0 for p in pairs])
    cols = np.unique(np.concatenate([pairs[i] for i in rows])) if len(rows) else np.empty(0, int)
    if not len(rows):
        return np.empty(0, int), np.empty(0, int)
    d = np.hypot(dx[rows][:, None] - tx[cols][None], dy[rows][:, None] - ty[cols][None])
    cost = np.where(d <= max_dist, d, 1e6)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] <= max_dist
    return rows[r[ok]], cols[c[ok]]


def _inner(bounds, x, y, margin: float) -> np.ndarray:
    return (x >= bounds[0] + margin) & (x < bounds[2] - margin) & (y >= bounds[1] + margin) & (y < bounds[3] - margin)


def score_trees(det: dict[str, np.ndarray], truth: Truth, margin: float = 5.0) -> dict:
    """F1/precision/recall over dominant trees, understory recall, height errors of matched pairs.

    Trees and tops within ``margin`` of the plot's edge are left out (their crowns are
    cut by the edge).  A top matched to an understory tree is no false positive; the
    reference set is the dominant trees (every tree in a one-layer stand)."""
    t = truth.trees
    dx, dy = np.asarray(det["x"], float), np.asarray(det["y"], float)
    dh = np.asarray(det["height"], float)
    din = _inner(truth.bounds, dx, dy, margin)
    dx, dy, dh = dx[din], dy[din], dh[din]
    tin = _inner(truth.bounds, t["x"], t["y"], margin)
    ref = np.flatnonzero(tin & t["dominant"])
    under = np.flatnonzero(tin & ~t["dominant"])
    r, c = match_trees(dx, dy, t["x"][ref], t["y"][ref])
    rest = np.setdiff1d(np.arange(len(dx)), r)
    r2, _ = match_trees(dx[rest], dy[rest], t["x"][under], t["y"][under])
    tp = len(r)
    fp = len(dx) - tp - len(r2)
    prec = tp / max(tp + fp, 1)
    rec = tp / max(len(ref), 1)
    herr = dh[r] - t["height"][ref][c]
    return {
        "trees_true": int(len(ref)), "trees_found": int(len(dx)),
        "f1": 2 * prec * rec / max(prec + rec, 1e-9), "precision": prec, "recall": rec,
        "understory_recall": (len(r2) / len(under)) if len(under) else None,
        "height_rmse": float(np.sqrt(np.mean(herr**2))) if tp else None,
        "height_bias": float(np.mean(herr)) if tp else None,
        "matched_index": (np.flatnonzero(din)[r], ref[c]),
    }


def resample_nearest(src: Raster, onto: Grid) -> np.ndarray:
    """``src`` read at the cell centres of ``onto`` (nearest cell; NaN outside)."""
    cx, cy = onto.centers()
    row, col, inside = src.grid.cell_of(cx, cy)
    out = np.full(onto.shape, np.nan)
    out[inside] = src.data[row[inside], col[inside]]
    return out


def raster_rmse(candidate: Raster, truth: Raster, mask: np.ndarray | None = None, margin: float = 0.0) -> dict:
    """RMSE and bias of ``candidate`` against ``truth`` over ``mask`` (truth's grid), cells
    within ``margin`` of the truth's edge left out.  Cells where the candidate has no
    value count as misses (reported, not hidden)."""
    c = resample_nearest(candidate, truth.grid)
    m = np.isfinite(truth.data) if mask is None else mask & np.isfinite(truth.data)
    if margin > 0:
        cx, cy = truth.grid.centers()
        m &= _inner(truth.grid.bounds, cx, cy, margin)
    e = (c - truth.data)[m]
    ok = np.isfinite(e)
    return {"rmse": float(np.sqrt(np.mean(e[ok] ** 2))) if ok.any() else None,
            "bias": float(np.mean(e[ok])) if ok.any() else None,
            "missing": float(1 - ok.mean()) if len(ok) else 0.0, "cells": int(m.sum())}


def score_chm(chm: Raster, truth: Truth, margin: float = 2.0) -> dict:
    """CHM error over cells where the true canopy is above 2 m."""
    return raster_rmse(chm, truth.chm, truth.chm.data > 2.0, margin)


def score_dtm(dtm: Raster, truth: Truth, margin: float = 2.0) -> dict:
    """DTM error over every cell (a margin for the plot's edge, where no ground lies beyond)."""
    return raster_rmse(dtm, truth.terrain, None, margin)


def true_crowns(truth: Truth, index: np.ndarray) -> list:
    """True crown outlines of trees ``index`` (neither family records them): the part of each
    crown disc (``crown_radius``) where the truth CHM is above 2 m and the tree is the nearest
    stem weighted by radius (a power diagram of the discs: the share of overlapping crowns a
    view from above gives each)."""
    import shapely

    t = truth.trees
    g = truth.chm.grid
    cx, cy = g.centers()
    out = []
    from scipy.spatial import cKDTree

    dom = np.flatnonzero(t["dominant"] | t["visible"])
    kd = cKDTree(np.column_stack((t["x"][dom], t["y"][dom])))
    for i in index:
        R = t["crown_radius"][i]
        r0, c0, _ = g.cell_of(np.array([t["x"][i] - R]), np.array([t["y"][i] + R]))
        r1, c1, _ = g.cell_of(np.array([t["x"][i] + R]), np.array([t["y"][i] - R]))
        r0, c0 = max(int(r0[0]), 0), max(int(c0[0]), 0)
        r1, c1 = min(int(r1[0]) + 1, g.nrow), min(int(c1[0]) + 1, g.ncol)
        if r1 <= r0 or c1 <= c0:
            out.append(None)
            continue
        X, Y = cx[r0:r1, c0:c1], cy[r0:r1, c0:c1]
        d2 = (X - t["x"][i]) ** 2 + (Y - t["y"][i]) ** 2
        inside = (d2 <= R * R) & (truth.chm.data[r0:r1, c0:c1] > 2.0)
        # power distance to the neighbours: d² - R²; the cell belongs to the smallest
        nb = kd.query_ball_point([t["x"][i], t["y"][i]], 2 * R + 10.0)
        for j in dom[nb]:
            if j == i:
                continue
            inside &= d2 - R * R <= (X - t["x"][j]) ** 2 + (Y - t["y"][j]) ** 2 - t["crown_radius"][j] ** 2
        cells = [shapely.box(x - g.res / 2, y - g.res / 2, x + g.res / 2, y + g.res / 2)
                 for x, y in zip(X[inside], Y[inside])]
        out.append(shapely.union_all(cells) if cells else None)
    return out


def score_crowns(crowns: list, det_index: np.ndarray, truth: Truth, true_index: np.ndarray) -> dict:
    """Median IoU and relative area error of the crowns of matched trees."""
    import shapely

    ref = true_crowns(truth, true_index)
    iou, area_err = [], []
    for k, b in zip(det_index, ref):
        a = crowns[k]
        if a is None or b is None or b.area == 0:
            continue
        inter = shapely.intersection(a, b).area
        iou.append(inter / shapely.union(a, b).area)
        area_err.append(a.area / b.area - 1)
    if not iou:
        return {"crown_iou": None, "crown_area_error": None, "crowns_scored": 0}
    return {"crown_iou": float(np.median(iou)), "crown_area_error": float(np.median(area_err)),
            "crowns_scored": len(iou)}


# --- running a pipeline on a truth forest ------------------------------------------


@dataclass
class Products:
    """What a pipeline made of a forest (metre frame): rasters, tops, crowns."""

    dtm: Raster
    chm: Raster
    trees: dict[str, np.ndarray]  # x, y, height (and apex_height when the pipeline estimates it)
    crowns: list | None = None
    seconds: float = 0.0


def engine_products(truth: Truth, workdir: Path, params=None) -> Products:
    """The engine's ``inventory`` on the forest's files, read back from what it wrote."""
    import time

    import shapely

    from .pipeline import ALL_PRODUCTS, Params, run

    params = params or Params()
    t0 = time.perf_counter()
    out = Path(workdir) / f"engine-{truth.name}-{type(params.crowns).__name__}"
    run(truth.files, out, params=params, products=ALL_PRODUCTS)
    seconds = time.perf_counter() - t0
    feats = json.loads((out / "trees.geojson").read_text())["features"]
    xy = np.array([f["geometry"]["coordinates"] for f in feats], float).reshape(-1, 2)
    trees = {"x": xy[:, 0], "y": xy[:, 1], "height": np.array([f["properties"]["height"] for f in feats], float)}
    if feats and "apex_height" in feats[0]["properties"]:
        trees["apex_height"] = np.array([f["properties"]["apex_height"] for f in feats], float)
    by_id = {f["properties"]["tree_id"]: shapely.geometry.shape(f["geometry"])
             for f in json.loads((out / "crowns.geojson").read_text())["features"]}
    crowns = [by_id.get(f["properties"]["tree_id"]) for f in feats]
    return Products(_read_raster(out / "dtm.tif"), _read_raster(out / "chm.tif"), trees, crowns, seconds)


def naive_products(truth: Truth) -> Products:
    """The naive reference pipeline: TIN DTM of the file's class 2 (the cloth filter when the
    file has none), max-binned 0.5 m CHM, fixed 5-cell (2.5 m) local maxima with the CHM
    value as height, watershed crowns."""
    import time

    from . import crowns as crownsmod
    from .ground import classify_ground
    from .read import open_scan, read_points
    from .surface import p2r, rasterize_canopy
    from .terrain import GroundModel, normalize_height, rasterize_terrain
    from .trees import lmf, locate_trees

    t0 = time.perf_counter()
    pts = classify_ground(read_points(open_scan(truth.files)))
    model = GroundModel.from_points(pts)
    dtm = rasterize_terrain(pts, grid=Grid.covering(truth.bounds, 1.0), model=model)
    n = normalize_height(pts, model, zmin=-2.0, hmax=90.0)
    chm = rasterize_canopy(n, algorithm=p2r(), grid=Grid.covering(truth.bounds, 0.5))
    chm.data = np.nan_to_num(chm.data, nan=0.0)
    tops = locate_trees(chm, lmf(ws=2.5))
    labels = crownsmod.segment_crowns(chm, tops, crownsmod.watershed())
    polys = crownsmod.crown_polygons(labels, chm.grid)
    crowns = [polys.get(i) for i in range(len(tops["x"]))]
    return Products(dtm, chm, tops, crowns, time.perf_counter() - t0)


def score(products: Products, truth: Truth) -> dict:
    """Every accuracy figure of one pipeline on one forest."""
    s = score_trees(products.trees, truth)
    det_i, true_i = s.pop("matched_index")
    if "apex_height" in products.trees and len(det_i):
        e = products.trees["apex_height"][det_i] - truth.trees["height"][true_i]
        s["apex_rmse"], s["apex_bias"] = float(np.sqrt(np.mean(e**2))), float(np.mean(e))
    if products.crowns is not None:
        s.update(score_crowns(products.crowns, det_i, truth, true_i))
    c, d = score_chm(products.chm, truth), score_dtm(products.dtm, truth)
    s.update(chm_rmse=c["rmse"], chm_bias=c["bias"], chm_missing=c["missing"], dtm_rmse=d["rmse"],
             dtm_bias=d["bias"], seconds=products.seconds)
    return s
