"""The streaming pipeline: a scan processed in buffered tiles, in one pass.

1. :func:`.tiling.plan_tiles` cuts the scan's extent into cores on a global lattice;
2. :func:`.tiling.bucket_points` streams the files once and spills each point to every
   buffered tile holding it;
3. :func:`.tile.process_tile` runs every step on one buffered tile, in this process or
   in a pool of ``jobs`` processes;
4. :class:`.assemble.Assembler` merges the tile results, in tile order, into COGs,
   GeoJSON and the summary (``metrics.json``).

A tile can also run alone on another worker and be merged later (:mod:`.parts`).
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .assemble import Assembler
from .errors import EmptyResult, InvalidParameter, NoGroundPoints
from .footprint import Occupancy
from .params import Params
from .progress import Progress, ProgressFn
from .read import PathLike, open_scan, read_points
from .tile import ALL_PRODUCTS, TileResult, process_tile
from .tiling import bucket_points, load_bucket, plan_tiles

__all__ = ["ALL_PRODUCTS", "Params", "inventory", "run"]


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
    occupancy = Occupancy(scan.bounds_m)
    asm = None
    timings: dict[str, float] = {}
    pool = _tile_pool(jobs, len(cores))
    try:
        t = time.perf_counter()
        tp = prog.slice(0.25, 0.95, len(cores), "tiles")
        if len(cores) == 1:
            prog.set(2, "reading points")
            pts = read_points(scan)
            timings["read"] = time.perf_counter() - t
            occupancy.add(pts.x, pts.y, pts.return_number)
            params = params.for_scan(occupancy.first_density)
            asm = Assembler(scan, mg, params, out, products)
            if len(pts):
                asm.add(process_tile(pts, cores[0], params, products))
            del pts
        else:
            buckets = bucket_points(scan, cores, params.buffer, tmp,
                                    prog.slice(0.02, 0.25, scan.point_count, "reading"),
                                    observe=lambda p: occupancy.add(p.x, p.y, p.return_number))
            timings["read"] = time.perf_counter() - t
            params = params.for_scan(occupancy.first_density)
            asm = Assembler(scan, mg, params, out, products)
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
        if asm is not None:
            asm.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()  # idle by now, or stopped by an error or a dismissal
            pool.join()
        shutil.rmtree(tmp, ignore_errors=True)
    timings.update({f"step_{k}": round(v, 3) for k, v in asm.timings.items()})
    summary = asm.summary(scan, params, products, paths)
    summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
    summary["timings"]["total"] = round(time.perf_counter() - t0, 3)
    summary["points_per_second"] = scan.point_count / summary["timings"]["total"]
    with open(out / "metrics.json", "w") as fh:
        json.dump(summary, fh, indent=1)
    summary["products"]["metrics"] = str(out / "metrics.json")
    prog.done("inventory finished")
    return summary


def inventory(inputs: PathLike | Sequence[PathLike], out_dir: PathLike, *, crs=None,
              resolution: float | None = Params.chm_res, dtm_resolution: float = Params.dtm_res,
              metrics_resolution: float = Params.metrics_res, tile_size: float = Params.tile_size,
              buffer: float = Params.buffer, progress: ProgressFn | None = None, params: Params | None = None,
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
    resolution : float, optional
        CHM cell size (m); None: from the scan's first-return spacing (:func:`.surface.chm_cell`).
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
