"""Metrics of the height-normalised points inside polygons (field plots)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely
from shapely import affinity

from . import metrics as metricsmod
from .errors import NoGroundPoints
from .params import Params
from .progress import Progress, ProgressFn
from .read import PathLike, open_scan, read_points
from .tile import ground_and_heights
from .tiling import buffered


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
        _, model, norm = ground_and_heights(pts, params)
        if model is None:
            raise NoGroundPoints(f"plot {i + 1}: no ground point around it (none classified, none found by "
                                 "the cloth filter)")
        norm = norm.subset(shapely.contains_xy(geom, norm.x, norm.y))
        res.update(metricsmod.cloud_metrics(norm, rumple_res=params.rumple_res))
        out.append(res)
        prog.advance(1, f"plot {i + 1}/{len(polygons)}")
    prog.done("plot metrics ready")
    return out
