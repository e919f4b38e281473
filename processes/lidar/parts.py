"""A tile's result kept in shared storage, for a tile run alone on another worker
(fan-out), and the merge of such parts into a scan's products.

A part is a plain ``.npz`` of numeric arrays: crowns as WKB bytes in one byte array with
their offsets, counts and timings as JSON text; nothing is pickled, so a part written by
someone else cannot run code on the worker that merges it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import shapely

from .assemble import Assembler
from .errors import InvalidPart
from .grid import Grid, Raster
from .params import Params
from .read import PathLike, open_scan
from .tile import ALL_PRODUCTS, TileResult
from .tiling import plan_tiles


def save_tile_result(r: TileResult, path: PathLike) -> Path:
    """Write a tile's result for a later :func:`merge_tile_results`."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"core": np.array(r.core, float)}
    for key, raster in (("dtm", r.dtm), ("chm", r.chm), ("metrics", r.metrics)):
        if raster is not None:
            g = raster.grid
            arrays[key] = raster.data
            arrays[key + "_grid"] = np.array([g.x0, g.y0, g.res, g.nrow, g.ncol], float)
    for k, v in r.trees.items():
        arrays["tree_" + k] = np.asarray(v, float)
    wkb = [shapely.to_wkb(c) if c is not None else b"" for c in r.crowns]
    arrays["crowns_wkb"] = np.frombuffer(b"".join(wkb), np.uint8)
    arrays["crowns_end"] = np.cumsum([len(b) for b in wkb], dtype=np.int64)
    arrays["meta"] = np.frombuffer(json.dumps({"stats": r.stats, "timings": r.timings}).encode(), np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_tile_result(path: PathLike) -> TileResult:
    """Read a part written by :func:`save_tile_result` (refused when it holds Python objects)."""
    try:
        z = np.load(path, allow_pickle=False)
        r = TileResult(core=tuple(float(v) for v in z["core"]))
        for key in ("dtm", "chm", "metrics"):
            if key in z:
                x0, y0, res, nrow, ncol = z[key + "_grid"]
                setattr(r, key, Raster(z[key], Grid(float(x0), float(y0), float(res), int(nrow), int(ncol)), key))
        r.trees = {k[5:]: z[k] for k in z.files if k.startswith("tree_")}
        blob, ends = z["crowns_wkb"].tobytes(), z["crowns_end"]
        starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
        r.crowns = [shapely.from_wkb(blob[a:b]) if b > a else None for a, b in zip(starts, ends)]
        meta = json.loads(z["meta"].tobytes().decode())
    except (ValueError, KeyError, OSError) as exc:
        raise InvalidPart(f"tile part {Path(path).name} is not a tile result: {exc}") from None
    r.stats, r.timings = meta["stats"], meta["timings"]
    return r


def merge_tile_results(parts: Sequence[PathLike], out_dir: PathLike, *, inputs: Sequence[PathLike], crs=None,
                       params: Params = Params(), products: Iterable[str] = ALL_PRODUCTS) -> dict:
    """Assemble tile results saved by separate workers into the scan's products; returns the
    same summary as :func:`.pipeline.run` (without its timings)."""
    scan = open_scan(inputs, crs=crs)
    mg, _ = plan_tiles(scan.bounds_m, params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    products = set(products)
    asm = Assembler(scan, mg, params, out, products)
    try:
        for p in parts:
            asm.add(load_tile_result(p))
        paths = asm.finish()
    except BaseException:
        asm.abort()
        raise
    return asm.summary(scan, params, products, paths)
