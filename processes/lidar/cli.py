"""Command line: ``python -m processes.lidar STEP INPUT... --out DIR [params]``.

Steps: inspect, footprint, ground, normalize, dtm, chm, trees, crowns, metrics,
plots, inventory.  Every step streams the scan in buffered tiles; a progress
bar is drawn when stderr is a terminal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import crowns as crownsmod
from .errors import LidarError
from .ground import csf
from .pipeline import Params, polygon_metrics, run, write_points
from .progress import terminal_bar
from .surface import p2r, pitfree
from .trees import lmf

STEPS = {
    "dtm": {"dtm"},
    "chm": {"chm"},
    "trees": {"trees"},
    "crowns": {"trees", "crowns"},
    "metrics": {"grid_metrics"},
    "inventory": {"dtm", "chm", "trees", "crowns", "grid_metrics"},
}


def _params(a: argparse.Namespace) -> Params:
    ws = a.ws if a.ws is not None else Params().trees.ws
    return Params(
        dtm_res=a.dtm_resolution, chm_res=a.resolution, metrics_res=a.metrics_resolution,
        tile_size=a.tile_size, buffer=a.buffer, reuse_ground=not a.reclassify,
        ground=csf(cloth_resolution=a.cloth_resolution, rigidness=a.rigidness, class_threshold=a.class_threshold),
        chm=p2r(subcircle=a.subcircle) if a.chm == "p2r" else pitfree(subcircle=a.subcircle,
                                                                      max_edge=(a.max_edge[0], a.max_edge[1])),
        trees=lmf(ws=ws, hmin=a.hmin),
        crowns=crownsmod.dalponte2016() if a.crowns == "dalponte2016" else crownsmod.watershed(),
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processes.lidar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["inspect", "footprint", "ground", "normalize", *STEPS, "plots"])
    p.add_argument("inputs", nargs="+", type=Path, help="LAS/LAZ/COPC files (tiles) of one scan")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--crs", help="CRS override, e.g. EPSG:3005")
    p.add_argument("--resolution", type=float, default=0.5, help="CHM cell size (m)")
    p.add_argument("--dtm-resolution", type=float, default=1.0)
    p.add_argument("--metrics-resolution", type=float, default=20.0)
    p.add_argument("--tile-size", type=float, default=250.0)
    p.add_argument("--buffer", type=float, default=30.0)
    p.add_argument("--reclassify", action="store_true", help="ignore the file's ground class, run CSF")
    p.add_argument("--cloth-resolution", type=float, default=0.5)
    p.add_argument("--rigidness", type=int, default=1)
    p.add_argument("--class-threshold", type=float, default=0.25)
    p.add_argument("--chm", choices=["pitfree", "p2r"], default="pitfree")
    p.add_argument("--subcircle", type=float, default=0.0)
    p.add_argument("--max-edge", type=float, nargs=2, default=pitfree().max_edge)
    p.add_argument("--ws", type=float, default=None, help="fixed LMF window (m); default: crown_window (height and canopy cover)")
    p.add_argument("--hmin", type=float, default=2.0)
    p.add_argument("--crowns", choices=["watershed", "dalponte2016"], default="watershed")
    p.add_argument("--polygons", type=Path, help="GeoJSON of plots (native CRS) for the 'plots' step")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes working on tiles at once")
    p.add_argument("--quiet", action="store_true")
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
