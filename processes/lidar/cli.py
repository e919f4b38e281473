"""Command line: ``python -m processes.lidar STEP INPUT... --out DIR [params]``.

Steps: inspect, footprint, ground, normalize, dtm, chm, trees, crowns, metrics,
plots, inventory.  Every step streams the scan in buffered tiles; a progress
bar is drawn when stderr is a terminal.  Algorithms are chosen and tuned with
``--FAMILY NAME`` and ``--FAMILY-PARAM VALUE`` (``--chm p2r --chm-subcircle 0.2``,
``--trees-ws 4``), generated from the algorithm objects.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import algorithms
from .errors import LidarError
from .params import Params
from .pipeline import run
from .plots import polygon_metrics
from .point_writer import write_points
from .progress import terminal_bar

STEPS = {
    "dtm": {"dtm"},
    "chm": {"chm"},
    "trees": {"trees"},
    "crowns": {"trees", "crowns"},
    "metrics": {"grid_metrics"},
    "inventory": {"dtm", "chm", "trees", "crowns", "grid_metrics"},
}


def _params(a: argparse.Namespace) -> Params:
    return Params(dtm_res=a.dtm_resolution, chm_res=a.resolution, metrics_res=a.metrics_resolution,
                  tile_size=a.tile_size, buffer=a.buffer, reuse_ground=not a.reclassify,
                  **{family: algorithms.from_flags(a, family) for family in algorithms.FAMILIES})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processes.lidar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["inspect", "footprint", "ground", "normalize", *STEPS, "plots"])
    p.add_argument("inputs", nargs="+", type=Path, help="LAS/LAZ/COPC files (tiles) of one scan")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--crs", help="CRS override, e.g. EPSG:3005")
    p.add_argument("--resolution", type=float, default=Params.chm_res,
                   help="CHM cell size (m); default: from the first-return spacing")
    p.add_argument("--dtm-resolution", type=float, default=Params.dtm_res)
    p.add_argument("--metrics-resolution", type=float, default=Params.metrics_res)
    p.add_argument("--tile-size", type=float, default=Params.tile_size)
    p.add_argument("--buffer", type=float, default=Params.buffer)
    p.add_argument("--reclassify", action="store_true", help="ignore the file's ground class, run the ground filter")
    p.add_argument("--polygons", type=Path, help="GeoJSON of plots (native CRS) for the 'plots' step")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes working on tiles at once")
    p.add_argument("--quiet", action="store_true")
    for family in algorithms.FAMILIES:  # --FAMILY NAME --FAMILY-PARAM VALUE, from the algorithm objects
        algorithms.add_flags(p, family)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    progress = None if a.quiet or not sys.stderr.isatty() else terminal_bar()
    try:
        if a.step == "inspect":
            from .validate import inspect

            result = [inspect(p) for p in a.inputs]
        elif a.step == "footprint":
            from .footprint import footprint

            fp = footprint(a.inputs, crs=a.crs, progress=progress)
            result = {k: v for k, v in fp.items() if k not in ("crs", "files")}
            result["footprint"] = fp["footprint"].wkt
        else:
            if a.out is None:
                raise SystemExit("--out DIR is required for this step")
            a.out.mkdir(parents=True, exist_ok=True)
            params = _params(a)
            if a.step in ("ground", "normalize"):
                result = write_points(a.inputs, a.out / f"{a.step}.laz", mode=a.step, crs=a.crs, params=params,
                                      progress=progress)
            elif a.step == "plots":
                import shapely

                if a.polygons is None:
                    raise SystemExit("--polygons FILE is required for the 'plots' step")
                fc = json.loads(a.polygons.read_text())
                geoms = [shapely.geometry.shape(f["geometry"]) for f in fc["features"]]
                result = polygon_metrics(a.inputs, geoms, crs=a.crs, params=params, progress=progress)
                (a.out / "plot_metrics.json").write_text(json.dumps(result, indent=1))
            else:
                result = run(a.inputs, a.out, crs=a.crs, params=params, products=STEPS[a.step], progress=progress,
                             jobs=a.jobs)
                result.pop("crs_wkt", None)
    except LidarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
    return 0
