"""The streaming pipeline: a scan processed in buffered tiles, one pass.

1. :func:`plan_tiles` cuts the scan's extent into square cores on a global
   lattice (a multiple of every raster's resolution).
2. :func:`bucket_points` streams the files once and spills each point to the
   temporary bucket of every tile whose *buffered* extent holds it.
3. :func:`process_tile` runs every step on one buffered tile and keeps what
   lies in its core: raster windows, the trees whose top is in the core (so a
   tree on a border is found once) with their whole crowns, grid metrics of
   the core's cells, and counts.
4. :class:`Assembler` merges tile results into COGs, GeoJSON and JSON.

``process_tile`` only needs the points of one buffered tile, so a tile can also
run alone (``read_tile`` + ``process_tile`` + ``save_tile_result``) on another
worker and be merged later with :func:`merge_tile_results`.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import shapely
from shapely import affinity

from . import crowns as crownsmod
from . import metrics as metricsmod
from .cog import MosaicWriter
from .errors import EmptyResult, InvalidParameter, NoGroundPoints
from .ground import classify_ground, classify_noise, csf, drop_noise, ivf, sor
from .grid import Grid, Raster
from .points import GROUND, Points, SPILL_DTYPE, from_records, to_records
from .progress import Progress, ProgressFn
from .read import PathLike, Scan, iter_points, open_scan, read_points
from .surface import max_per_cell, p2r, pitfree, rasterize_canopy
from .terrain import GroundModel, knnidw, tin
from .trees import apex_heights, lmf, locate_trees, tree_heights

Bounds = tuple[float, float, float, float]
ALL_PRODUCTS = frozenset({"dtm", "chm", "trees", "crowns", "grid_metrics"})


@dataclass(frozen=True)
class Params:
    """Every knob of the pipeline, with lidR/PDAL names inside the algorithm objects."""

    dtm_res: float = 1.0
    chm_res: float = 0.5
    metrics_res: float = 20.0
    rumple_res: float = 1.0
    tile_size: float = 250.0
    buffer: float = 30.0
    ground: csf = csf()
    reuse_ground: bool = True
    noise: ivf | sor | None = ivf()
    hmax: float = 90.0  # normalised heights above this are noise (birds, clouds)
    zmin: float = -2.0  # points this far below the terrain are noise (multipath)
    dtm: tin | knnidw = tin()
    chm: pitfree | p2r = pitfree()
    trees: lmf = lmf()
    crowns: crownsmod.watershed | crownsmod.dalponte2016 = crownsmod.watershed()

    def check(self) -> None:
        if self.buffer > 0 and isinstance(self.dtm, tin) and self.dtm.max_radius > self.buffer:
            raise InvalidParameter(
                f"buffer ({self.buffer} m) must be at least the TIN's max_radius ({self.dtm.max_radius} m) "
                "for tiles to match the whole scan")
        for name in ("dtm_res", "chm_res", "metrics_res", "rumple_res", "tile_size"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise InvalidParameter(f"{name} must be a positive number, got {v!r}")
        if not (self.buffer >= 0):
            raise InvalidParameter(f"buffer must be >= 0, got {self.buffer!r}")
        for name in ("dtm_res", "chm_res", "rumple_res"):
            r = self.metrics_res / getattr(self, name)
            if abs(r - round(r)) > 1e-9:
                raise InvalidParameter(f"metrics_res ({self.metrics_res}) must be a multiple of {name}")


# --- tiles ------------------------------------------------------------------------


def plan_tiles(bounds: Bounds, params: Params) -> tuple[Grid, list[Bounds]]:
    """The scan's metrics grid and the tile cores (multiples of ``metrics_res``) covering it."""
    params.check()
    # cells are half-open (x in [x0, x1), y in (y0, y1]): make sure the east and
    # south extremes fall inside even when they lie exactly on the lattice
    eps = 1e-6 * params.metrics_res
    mg = Grid.covering((bounds[0], bounds[1] - eps, bounds[2] + eps, bounds[3]), params.metrics_res)
    k = max(int(round(params.tile_size / params.metrics_res)), 1)
    cores = []
    for r0 in range(0, mg.nrow, k):
        for c0 in range(0, mg.ncol, k):
            x0 = mg.x0 + c0 * mg.res
            y1 = mg.y0 - r0 * mg.res
            x1 = mg.x0 + min(c0 + k, mg.ncol) * mg.res
            y0 = mg.y0 - min(r0 + k, mg.nrow) * mg.res
            cores.append((x0, y0, x1, y1))
    return mg, cores


def buffered(b: Bounds, buffer: float) -> Bounds:
    return (b[0] - buffer, b[1] - buffer, b[2] + buffer, b[3] + buffer)


def in_core(x: np.ndarray, y: np.ndarray, core: Bounds) -> np.ndarray:
    """Half-open membership (west/south edges in, east/north... edges by cell rule)."""
    return (x >= core[0]) & (x < core[2]) & (y > core[1]) & (y <= core[3])


def bucket_points(scan: Scan, cores: list[Bounds], buffer: float, workdir: Path,
                  progress: Progress | None = None) -> list[Path]:
    """Stream the scan once, appending each point to every buffered tile holding it."""
    paths = [workdir / f"tile_{i:05d}.bin" for i in range(len(cores))]
    handles: dict[int, object] = {}
    bb = np.array([buffered(c, buffer) for c in cores])
    try:
        for pts in iter_points(scan):
            cx0, cy0, cx1, cy1 = pts.x.min(), pts.y.min(), pts.x.max(), pts.y.max()
            hit = np.flatnonzero((bb[:, 0] <= cx1) & (bb[:, 2] >= cx0) & (bb[:, 1] <= cy1) & (bb[:, 3] >= cy0))
            for i in hit:
                b = bb[i]
                m = (pts.x >= b[0]) & (pts.x <= b[2]) & (pts.y >= b[1]) & (pts.y <= b[3])
                if not m.any():
                    continue
                if i not in handles:
                    handles[i] = open(paths[i], "ab")
                to_records(pts.subset(m)).tofile(handles[i])
            if progress is not None:
                progress.advance(len(pts), f"read {progress.done_units:,.0f} points")
    finally:
        for h in handles.values():
            h.close()
    return paths


def load_bucket(path: Path) -> Points:
    if not path.exists():
        return Points.empty()
    return from_records(np.fromfile(path, dtype=SPILL_DTYPE))


def read_tile(scan: Scan, core: Bounds, buffer: float) -> Points:
    """The points of one buffered tile, read directly from the files (for a worker running one tile)."""
    return read_points(scan, buffered(core, buffer))


def _local(algorithm: tin | knnidw, buffer: float) -> tin | knnidw:
    """The terrain algorithm with its reach limited to the buffer, so that every
    cell of a core sees the same ground points in its tile as in the whole scan."""
    if buffer <= 0:
        return algorithm
    if isinstance(algorithm, tin):
        fb = replace(algorithm.fallback, rmax=min(algorithm.fallback.rmax, buffer))
        return replace(algorithm, fallback=fb)
    return replace(algorithm, rmax=min(algorithm.rmax, buffer))


# --- one tile -------------------------------------------------------------------------


@dataclass
class TileResult:
    """What one tile contributes to the scan's products (metre frame)."""

    core: Bounds
    dtm: Raster | None = None
    chm: Raster | None = None
    metrics: Raster | None = None  # (bands, rows, cols)
    trees: dict[str, np.ndarray] = field(default_factory=dict)
    crowns: list = field(default_factory=list)  # shapely polygons, aligned with trees
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


def _empty_trees() -> dict[str, np.ndarray]:
    return {k: np.empty(0) for k in ("x", "y", "height", "apex_height", "crown_area", "crown_diameter")}


def process_tile(points: Points, core: Bounds, params: Params = Params(),
                 products: Iterable[str] = ALL_PRODUCTS) -> TileResult:
    """Run every step on the points of one buffered tile and keep the core's share.

    Parameters
    ----------
    points : Points
        The tile's points *with* its buffer (metre frame).
    core : (minx, miny, maxx, maxy)
        The tile's core on the metrics lattice.
    params : Params
    products : subset of {"dtm", "chm", "trees", "crowns", "grid_metrics"}
    """
    products = set(products)
    res = TileResult(core=core, trees=_empty_trees())
    t = time.perf_counter()
    tm = res.timings

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        tm[name] = tm.get(name, 0.0) + now - t
        t = now

    stats = res.stats
    incore = in_core(points.x, points.y, core)
    stats["points"] = int(incore.sum())
    pts = drop_noise(points)
    if params.noise is not None and len(pts):
        pts = drop_noise(classify_noise(pts, params.noise))
    lap("noise")
    if len(pts) == 0:
        stats.update(ground=0, noise=stats["points"], first=0, first_above2=0, no_ground=True)
        return res
    try:
        pts = classify_ground(pts, params.ground, reuse=params.reuse_ground)
    except NoGroundPoints:
        pts = pts.replace(classification=pts.classification)
    lap("ground")
    g = pts.classification == GROUND
    if not g.any():
        stats.update(ground=0, first=0, first_above2=0, noise=0, no_ground=True)
        return res
    model = GroundModel(pts.x[g], pts.y[g], pts.z[g], _local(params.dtm, params.buffer))
    lap("tin")
    if "dtm" in products:
        dg = Grid.covering(core, params.dtm_res)
        res.dtm = Raster(model.on_grid(dg).astype(np.float32), dg, "dtm")
        lap("dtm")
    # rounded to the micrometre: the TIN's last-bit noise depends on the tile's
    # origin and would otherwise break ties between equal heights differently
    hag = np.round(pts.z - model(pts.x, pts.y), 6)
    keep = np.isfinite(hag) & (hag >= params.zmin) & (hag <= params.hmax)
    norm = pts.replace(z=hag).subset(keep)
    lap("normalize")
    c = in_core(norm.x, norm.y, core)
    first = norm.return_number <= 1
    stats.update(
        ground=int((c & (norm.classification == GROUND)).sum()),
        first=int((c & first).sum()),
        first_above2=int((c & first & (norm.z > 2)).sum()),
        noise=stats["points"] - int(c.sum()),
        no_ground=False,
    )
    need_chm = bool(products & {"chm", "trees", "crowns"})
    if need_chm:
        bg = Grid.covering((norm.x.min(), norm.y.min(), norm.x.max(), norm.y.max()), params.chm_res)
        cg = Grid.covering(core, params.chm_res)
        # the buffered CHM grid must contain the core grid
        bg = Grid.covering((min(bg.bounds[0], cg.bounds[0]), min(bg.bounds[1], cg.bounds[1]),
                            max(bg.bounds[2], cg.bounds[2]), max(bg.bounds[3], cg.bounds[3])), params.chm_res)
        chm = rasterize_canopy(norm, algorithm=params.chm, grid=bg)
        lap("chm")
        if "chm" in products:
            res.chm = chm.crop(cg)
        if products & {"trees", "crowns"}:
            tops = locate_trees(chm, params.trees)
            tops["apex_height"] = tops["height"]
            if len(tops["x"]):
                tops["height"] = tree_heights(norm, tops)
                tops["apex_height"] = apex_heights(norm, tops, bg)
            lap("trees")
            mine = in_core(tops["x"], tops["y"], core)
            labels = crownsmod.segment_crowns(chm, tops, params.crowns)
            area, diam = crownsmod.crown_stats(labels, bg.res, len(tops["x"]))
            res.trees = {"x": tops["x"][mine], "y": tops["y"][mine], "height": tops["height"][mine],
                         "apex_height": tops["apex_height"][mine], "crown_area": area[mine], "crown_diameter": diam[mine]}
            if "crowns" in products and mine.any():
                idx = np.flatnonzero(mine)
                keep_lab = np.zeros(len(tops["x"]) + 1, bool)
                keep_lab[idx + 1] = True
                lab = np.where(keep_lab[labels], labels, 0)
                polys = crownsmod.crown_polygons(lab, bg)
                res.crowns = [polys.get(int(i)) for i in idx]
            lap("crowns")
    if "grid_metrics" in products:
        mg = Grid.covering(core, params.metrics_res)
        cp = norm.subset(c)
        row, col, inside = mg.cell_of(cp.x, cp.y)
        cp = cp.subset(inside)
        gi = (row * mg.ncol + col)[inside]
        ncell = mg.nrow * mg.ncol
        rg = Grid.covering(core, params.rumple_res)
        dsm = max_per_cell(cp.x, cp.y, np.maximum(cp.z, 0.0), rg)
        factor = int(round(params.metrics_res / params.rumple_res))
        rum = metricsmod.rumple_per_cell(dsm, factor, params.rumple_res).ravel()
        m = metricsmod.group_metrics(cp, gi, ncell, dsm_rumple=rum)
        arr = np.stack([m[k].reshape(mg.shape) for k in metricsmod.METRIC_NAMES]).astype(np.float32)
        res.metrics = Raster(arr, mg, "grid_metrics")
        lap("metrics")
    return res


# --- assembling -----------------------------------------------------------------------


class FeatureWriter:
    """A GeoJSON FeatureCollection written feature by feature (memory stays flat however
    many trees a scan holds); appears under its name only when closed."""

    def __init__(self, path: Path, crs_epsg: int | None):
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.fh = open(self.part, "w")
        self.count = 0
        head = {"type": "FeatureCollection"}
        if crs_epsg:
            head["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{crs_epsg}"}}
        self.fh.write(json.dumps(head, separators=(",", ":"))[:-1] + ',"features":[')

    def add(self, feature: dict) -> None:
        self.fh.write(("," if self.count else "") + json.dumps(feature, separators=(",", ":")))
        self.count += 1

    def close(self) -> Path:
        self.fh.write("]}")
        self.fh.close()
        self.part.replace(self.path)
        return self.path

    def abort(self) -> None:
        self.fh.close()
        self.part.unlink(missing_ok=True)


class Assembler:
    """Merges tile results into the scan's products in ``out_dir``."""

    def __init__(self, scan_crs, to_native: float, metrics_grid: Grid, params: Params, out_dir: Path,
                 products: set[str], crs_epsg: int | None):
        self.f = to_native
        self.writers: dict[str, MosaicWriter] = {}
        b = metrics_grid.bounds
        if "dtm" in products:
            self.writers["dtm"] = MosaicWriter(out_dir / "dtm.tif", Grid.covering(b, params.dtm_res), scan_crs,
                                               ["elevation"], to_native=to_native)
        if "chm" in products:
            self.writers["chm"] = MosaicWriter(out_dir / "chm.tif", Grid.covering(b, params.chm_res), scan_crs,
                                               ["height"], to_native=to_native)
        if "grid_metrics" in products:
            self.writers["grid_metrics"] = MosaicWriter(out_dir / "grid_metrics.tif", metrics_grid, scan_crs,
                                                        metricsmod.METRIC_NAMES, to_native=to_native)
        self.features: dict[str, FeatureWriter] = {}
        if products & {"trees", "crowns"}:
            self.features["trees"] = FeatureWriter(out_dir / "trees.geojson", crs_epsg)
        if "crowns" in products:
            self.features["crowns"] = FeatureWriter(out_dir / "crowns.geojson", crs_epsg)
        self.tree_count = 0
        self.height_sum, self.height_max = 0.0, None
        self.stats = {"points": 0, "ground": 0, "first": 0, "first_above2": 0, "noise": 0, "tiles": 0,
                      "tiles_without_ground": 0}
        self.timings: dict[str, float] = {}
        self.band_sums = np.zeros(len(metricsmod.METRIC_NAMES))
        self.band_counts = np.zeros(len(metricsmod.METRIC_NAMES))

    def add(self, r: TileResult) -> None:
        for key, raster in (("dtm", r.dtm), ("chm", r.chm), ("grid_metrics", r.metrics)):
            if raster is not None and key in self.writers:
                self.writers[key].write(raster.data, raster.grid)
        if r.metrics is not None:
            a = r.metrics.data.reshape(len(metricsmod.METRIC_NAMES), -1)
            ok = np.isfinite(a) & (a.shape[1] > 0)
            self.band_sums += np.where(ok, a, 0).sum(axis=1)
            self.band_counts += ok.sum(axis=1)
        t = r.trees
        for i in range(len(t.get("x", []))):
            self.tree_count += 1
            tid = self.tree_count
            props = {"tree_id": tid, "height": round(float(t["height"][i]), 3),
                     "apex_height": round(float(t["apex_height"][i]), 3),
                     "crown_area": round(float(t["crown_area"][i]), 3),
                     "crown_diameter": round(float(t["crown_diameter"][i]), 3)}
            self.height_sum += props["height"]
            self.height_max = props["height"] if self.height_max is None else max(self.height_max, props["height"])
            if "trees" in self.features:
                xy = [float(t["x"][i]) * self.f, float(t["y"][i]) * self.f]
                self.features["trees"].add({"type": "Feature", "id": tid,
                                            "geometry": {"type": "Point", "coordinates": xy}, "properties": props})
            if "crowns" in self.features and r.crowns and i < len(r.crowns) and r.crowns[i] is not None:
                poly = affinity.scale(r.crowns[i], xfact=self.f, yfact=self.f, origin=(0, 0))
                self.features["crowns"].add({
                    "type": "Feature", "id": tid, "geometry": shapely.geometry.mapping(poly),
                    "properties": {"tree_id": tid, "height": props["height"], "area": props["crown_area"],
                                   "diameter": props["crown_diameter"]}})
        for k in ("points", "ground", "first", "first_above2", "noise"):
            self.stats[k] += int(r.stats.get(k, 0))
        self.stats["tiles"] += 1
        self.stats["tiles_without_ground"] += int(bool(r.stats.get("no_ground")))
        for k, v in r.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v

    def finish(self) -> dict:
        paths: dict[str, str] = {}
        for key, w in self.writers.items():
            paths[key] = str(w.close())
        for key, fw in self.features.items():
            paths[key] = str(fw.close())
        return paths

    @property
    def crown_count(self) -> int:
        return self.features["crowns"].count if "crowns" in self.features else 0

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
        for fw in self.features.values():
            fw.abort()


# --- the whole scan ---------------------------------------------------------------------


def _bucket_task(args: tuple) -> TileResult | None:
    """One tile from its spilled bucket (runs in a pool process when ``jobs`` > 1)."""
    path, core, params, products = args
    t = time.perf_counter()
    pts = load_bucket(path)
    path.unlink(missing_ok=True)
    if not len(pts):
        return None
    r = process_tile(pts, core, params, products)
    r.timings["load"] = time.perf_counter() - t - sum(r.timings.values())
    return r


def _tile_pool(jobs: int, ntiles: int):
    """Processes for the tiles (None: work in this process). Started before the scan is
    read so that they import their modules meanwhile; spawned, not forked, because this
    process holds lazrs's decoder threads, and spawned children are direct children, so
    their peak RSS shows in RUSAGE_CHILDREN."""
    if jobs <= 1 or ntiles <= 1:
        return None
    return multiprocessing.get_context("spawn").Pool(min(jobs, ntiles), initializer=_warm_up)


def _warm_up() -> None:
    """Nothing: unpickling this function imported the pipeline and its libraries."""


def _tile_results(tasks: list[tuple], pool) -> Iterator[TileResult | None]:
    """Tile results in tile order, computed here or by the pool (the caller assembles them
    in order, so the products do not depend on the number of processes)."""
    if pool is None:
        for task in tasks:
            yield _bucket_task(task)
        return
    yield from pool.imap(_bucket_task, tasks)


def run(inputs: PathLike | Sequence[PathLike], out_dir: PathLike, *, crs=None, params: Params = Params(),
        products: Iterable[str] = ALL_PRODUCTS, progress: ProgressFn | None = None,
        workdir: PathLike | None = None, jobs: int = 1) -> dict:
    """Run the products of ``products`` over a scan in buffered tiles (see :func:`inventory`);
    ``jobs`` processes work on tiles at once (1: all in this process)."""
    t0 = time.perf_counter()
    products = set(products)
    unknown = products - ALL_PRODUCTS
    if unknown:
        raise InvalidParameter(f"unknown products {sorted(unknown)}")
    params.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prog = Progress(progress, 100.0, "")
    prog.set(0, "validating inputs")
    scan = open_scan(inputs, crs=crs)
    if scan.point_count == 0:
        raise EmptyResult("the scan holds no points")
    mg, cores = plan_tiles(scan.bounds_m, params)
    tmp = Path(tempfile.mkdtemp(prefix="canopy-tiles-", dir=workdir))
    to_native = 1.0 / scan.crs.xy_to_m
    asm = Assembler(scan.crs.crs, to_native, mg, params, out, products, scan.crs.epsg)
    timings: dict[str, float] = {}
    pool = _tile_pool(jobs, len(cores))
    try:
        t = time.perf_counter()
        tp = prog.slice(0.25, 0.95, len(cores), "tiles")
        if len(cores) == 1:
            prog.set(2, "reading points")
            pts = read_points(scan)
            timings["read"] = time.perf_counter() - t
            if len(pts):
                asm.add(process_tile(pts, cores[0], params, products))
            del pts
        else:
            buckets = bucket_points(scan, cores, params.buffer, tmp,
                                    prog.slice(0.02, 0.25, scan.point_count, "reading"))
            timings["read"] = time.perf_counter() - t
            tasks = [(b, c, params, products) for b, c in zip(buckets, cores)]
            for i, r in enumerate(_tile_results(tasks, pool)):
                if r is not None:
                    asm.add(r)
                tp.set(i + 1, f"tile {i + 1}/{len(cores)}")
        tp.done(f"{len(cores)} tiles")
        if asm.stats["points"] and asm.stats["tiles"] == asm.stats["tiles_without_ground"]:
            raise NoGroundPoints("no ground point in the scan (none classified and none found by the cloth filter)")
        prog.set(96, "writing Cloud Optimized GeoTIFFs")
        t = time.perf_counter()
        paths = asm.finish()
        timings["write"] = time.perf_counter() - t
    except BaseException:
        asm.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()  # idle by now, or stopped by an error or a dismissal
            pool.join()
        shutil.rmtree(tmp, ignore_errors=True)
    timings.update({f"step_{k}": round(v, 3) for k, v in asm.timings.items()})
    s = asm.stats
    summary = {
        "inputs": [str(f.path) for f in scan.files],
        "crs_epsg": scan.crs.epsg,
        "crs_wkt": scan.crs.wkt,
        "units_to_metre": scan.crs.xy_to_m,
        "bounds": [float(v) * to_native for v in mg.bounds],
        "tiles": len(cores),
        "tile_size": params.tile_size,
        "buffer": params.buffer,
        "point_count": scan.point_count,
        "points_processed": s["points"],
        "noise_points": s["noise"],
        "ground_points": s["ground"],
        "ground_share": s["ground"] / s["points"] if s["points"] else 0.0,
        "canopy_cover": s["first_above2"] / s["first"] if s["first"] else 0.0,
        "tree_count": asm.tree_count,
        "crown_count": asm.crown_count,
        "tree_height_mean": asm.height_sum / asm.tree_count if asm.tree_count else None,
        "tree_height_max": asm.height_max,
        "area_ha": mg.nrow * mg.ncol * mg.res**2 / 10_000,
        "products": paths,
        "grid_metric_means": ({k: (float(sv / cv) if cv else None) for k, sv, cv in
                               zip(metricsmod.METRIC_NAMES, asm.band_sums, asm.band_counts)}
                              if "grid_metrics" in products else {}),
        "band_names": metricsmod.METRIC_NAMES if "grid_metrics" in products else [],
        "resolutions": {"dtm": params.dtm_res, "chm": params.chm_res, "metrics": params.metrics_res},
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    summary["timings"]["total"] = round(time.perf_counter() - t0, 3)
    summary["points_per_second"] = scan.point_count / summary["timings"]["total"]
    with open(out / "metrics.json", "w") as fh:
        json.dump(summary, fh, indent=1)
    summary["products"]["metrics"] = str(out / "metrics.json")
    prog.done("inventory finished")
    return summary


def inventory(inputs: PathLike | Sequence[PathLike], out_dir: PathLike, *, crs=None, resolution: float = 0.5,
              dtm_resolution: float = 1.0, metrics_resolution: float = 20.0, tile_size: float = 250.0,
              buffer: float = 30.0, progress: ProgressFn | None = None, params: Params | None = None,
              jobs: int = 1, **overrides) -> dict:
    """Forest inventory of a scan in one streaming pass.

    Writes ``dtm.tif``, ``chm.tif``, ``trees.geojson`` (height, crown area and
    diameter per tree), ``crowns.geojson``, ``grid_metrics.tif`` (one band per
    metric, band names recorded) and ``metrics.json`` (the returned summary)
    in ``out_dir``.

    Parameters
    ----------
    inputs : path or list of paths
        LAS/LAZ/COPC files forming one scan.
    out_dir : path
    crs : CRS-like, optional
        Override for files without a usable CRS.
    resolution : float
        CHM cell size (m).
    dtm_resolution, metrics_resolution : float
        DTM and grid-metrics cell sizes (m).
    tile_size, buffer : float
        Tile core side and buffer (m).
    progress : callable(percent, message), optional
        Called regularly; an exception raised by it stops the run.
    params : Params, optional
        Full parameter set (the keyword arguments above override it).
    jobs : int
        Processes working on tiles at once.
    **overrides
        Any other :class:`Params` field (``ground=csf(...)``, ``trees=lmf(...)``...).

    Returns
    -------
    dict
        Counts, ground share, canopy cover, tree count, paths, CRS, timings.
    """
    p = params or Params()
    p = replace(p, chm_res=resolution, dtm_res=dtm_resolution, metrics_res=metrics_resolution,
                tile_size=tile_size, buffer=buffer, **overrides)
    return run(inputs, out_dir, crs=crs, params=p, products=ALL_PRODUCTS, progress=progress, jobs=jobs)


# --- plots ---------------------------------------------------------------------------------


def polygon_metrics(inputs: PathLike | Sequence[PathLike], polygons: Sequence, *, crs=None,
                    params: Params = Params(), progress: ProgressFn | None = None) -> list[dict]:
    """Metrics of the normalised points inside each polygon (plots).

    Parameters
    ----------
    inputs : path or list of paths
    polygons : list of shapely geometries in the scan's native CRS
    crs : CRS-like, optional
    params : Params
        Ground/noise/DTM settings (``buffer`` is the margin read around each
        plot for its terrain model).

    Returns
    -------
    list of dict
        One dict per polygon: every metric of :data:`metrics.METRIC_NAMES`
        (None when undefined), ``lad`` profile, ``area_m2``.
    """
    scan = open_scan(inputs, crs=crs)
    f = scan.crs.xy_to_m
    prog = Progress(progress, max(len(polygons), 1), "plot metrics")
    out = []
    for i, poly in enumerate(polygons):
        geom = affinity.scale(poly, xfact=f, yfact=f, origin=(0, 0))
        pts = read_points(scan, buffered(geom.bounds, params.buffer))
        res = {"index": i, "area_m2": float(geom.area)}
        inside = shapely.contains_xy(geom, pts.x, pts.y) if len(pts) else np.zeros(0, bool)
        if not inside.any():
            res.update({k: None for k in metricsmod.METRIC_NAMES})
            res["n"] = 0
            out.append(res)
            prog.advance(1, f"plot {i + 1}")
            continue
        pts = drop_noise(pts)
        if params.noise is not None:
            pts = drop_noise(classify_noise(pts, params.noise))
        pts = classify_ground(pts, params.ground, reuse=params.reuse_ground)
        model = GroundModel.from_points(pts, params.dtm)
        hag = pts.z - model(pts.x, pts.y)
        keep = np.isfinite(hag) & (hag >= params.zmin) & (hag <= params.hmax)
        norm = pts.replace(z=hag).subset(keep)
        norm = norm.subset(shapely.contains_xy(geom, norm.x, norm.y))
        res.update(metricsmod.cloud_metrics(norm, rumple_res=params.rumple_res))
        out.append(res)
        prog.advance(1, f"plot {i + 1}/{len(polygons)}")
    prog.done("plot metrics ready")
    return out


# --- one tile on its own (fan-out) --------------------------------------------------------


def save_tile_result(r: TileResult, path: PathLike) -> Path:
    """Persist a tile's result (npz + WKB crowns) for a later :func:`merge_tile_results`."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"core": np.array(r.core)}
    for key, raster in (("dtm", r.dtm), ("chm", r.chm), ("metrics", r.metrics)):
        if raster is not None:
            g = raster.grid
            arrays[key] = raster.data
            arrays[key + "_grid"] = np.array([g.x0, g.y0, g.res, g.nrow, g.ncol])
    for k, v in r.trees.items():
        arrays["tree_" + k] = np.asarray(v)
    arrays["crowns_wkb"] = np.array([shapely.to_wkb(c) if c is not None else b"" for c in r.crowns], dtype=object)
    arrays["stats"] = np.array(json.dumps({"stats": r.stats, "timings": r.timings}))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays, allow_pickle=True)
    return path


def load_tile_result(path: PathLike) -> TileResult:
    z = np.load(path, allow_pickle=True)
    r = TileResult(core=tuple(z["core"]))
    for key in ("dtm", "chm", "metrics"):
        if key in z:
            x0, y0, res, nrow, ncol = z[key + "_grid"]
            setattr(r, key, Raster(z[key], Grid(float(x0), float(y0), float(res), int(nrow), int(ncol)), key))
    r.trees = {k[5:]: z[k] for k in z.files if k.startswith("tree_")}
    r.crowns = [shapely.from_wkb(b) if len(b) else None for b in z["crowns_wkb"]]
    meta = json.loads(str(z["stats"]))
    r.stats, r.timings = meta["stats"], meta["timings"]
    return r


def merge_tile_results(parts: Sequence[PathLike], out_dir: PathLike, *, inputs: Sequence[PathLike], crs=None,
                       params: Params = Params(), products: Iterable[str] = ALL_PRODUCTS) -> dict:
    """Assemble tile results saved by separate workers into the scan's products."""
    scan = open_scan(inputs, crs=crs)
    mg, _ = plan_tiles(scan.bounds_m, params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    asm = Assembler(scan.crs.crs, 1.0 / scan.crs.xy_to_m, mg, params, out, set(products), scan.crs.epsg)
    try:
        for p in parts:
            asm.add(load_tile_result(p))
        paths = asm.finish()
    except BaseException:
        asm.abort()
        raise
    s = asm.stats
    return {"products": paths, "tree_count": asm.tree_count, **s,
            "canopy_cover": s["first_above2"] / s["first"] if s["first"] else 0.0}


# --- point outputs (ground classification, normalisation) ---------------------------------


def write_points(inputs: PathLike | Sequence[PathLike], out_path: PathLike, *, mode: str = "ground", crs=None,
                 params: Params = Params(), progress: ProgressFn | None = None) -> dict:
    """Classify ground (``mode="ground"``) or normalise heights (``"normalize"``)
    tile by tile and write the points as one LAS/LAZ file (noise removed)."""
    import laspy

    if mode not in ("ground", "normalize"):
        raise InvalidParameter("mode must be 'ground' or 'normalize'")
    params.check()
    scan = open_scan(inputs, crs=crs)
    mg, cores = plan_tiles(scan.bounds_m, params)
    prog = Progress(progress, 100.0, mode)
    tmp = Path(tempfile.mkdtemp(prefix="canopy-tiles-"))
    f = scan.crs.xy_to_m
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales = np.array([0.001, 0.001, 0.001]) / np.array([f, f, 1.0]) if f != 1.0 else np.array([0.001] * 3)
    b = mg.bounds
    header.offsets = np.array([math.floor(b[0] / f), math.floor(b[1] / f), 0.0])
    header.add_crs(scan.crs.crs)
    n_out = n_ground = 0
    try:
        buckets = bucket_points(scan, cores, params.buffer, tmp, prog.slice(0, 0.3, scan.point_count, "reading"))
        tp = prog.slice(0.3, 1.0, len(cores), "tiles")
        with laspy.open(str(out_path), mode="w", header=header) as w:
            for i, core in enumerate(cores):
                tp.set(i, f"tile {i + 1}/{len(cores)}")
                pts = load_bucket(buckets[i])
                if not len(pts):
                    continue
                pts = drop_noise(pts)
                if params.noise is not None:
                    pts = drop_noise(classify_noise(pts, params.noise))
                pts = classify_ground(pts, params.ground, reuse=params.reuse_ground)
                if mode == "normalize":
                    model = GroundModel.from_points(pts, params.dtm)
                    pts = pts.replace(z=np.round(pts.z - model(pts.x, pts.y), 6))
                pts = pts.subset(in_core(pts.x, pts.y, core))
                rec = laspy.ScaleAwarePointRecord.zeros(len(pts), header=header)
                rec.x, rec.y, rec.z = pts.x / f, pts.y / f, pts.z
                rec.intensity = pts.intensity
                rec.return_number = np.maximum(pts.return_number, 1)
                rec.number_of_returns = np.maximum(pts.number_of_returns, 1)
                rec.classification = pts.classification
                w.write_points(rec)
                n_out += len(pts)
                n_ground += int((pts.classification == GROUND).sum())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prog.done(f"{n_out:,} points written")
    return {"path": str(out_path), "points": n_out, "ground_points": n_ground,
            "ground_share": n_ground / n_out if n_out else 0.0}
