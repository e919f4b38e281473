"""`predict-area-model`: a stored area model applied to every cell of a scan's grid metrics.
Writes one COG (raster kind `aba`): band 1 the attribute per hectare (its unit in the
band's `units` tag), band 2 the extrapolation flag (1 where a metric the model reads is
outside the plots' range). Totals over the scan and, on request, over a stand polygon,
with a confidence interval from the model's cross-validated RMSE
(:func:`processes.lidar.aba_map.total`)."""

from __future__ import annotations

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.ops import transform as shapely_transform

from .base import CanopyProcess, JobContext, Outcome, ProcessInputError, scan_input
from .lidar import aba
from .lidar.aba_map import check_resolution, predict_grid, total
from .lidar.cog import read_raster, write_cog
from .lidar.errors import LidarError
from .lidar.grid import Grid
from .lidar_job import link_output, metadata, raster_artifacts

PROCESS_METADATA = metadata(
    "predict-area-model", "Map an area-based model",
    "Applies a stored area model (fit-area-model, /area-models/{id}) to the scan's grid metrics at the model's "
    "resolution: one COG of the attribute per hectare (band 1, with its unit) and the extrapolation flag (band 2), "
    "served as tiles; totals over the scan and over an optional stand polygon with a confidence interval "
    "(SE = a·RMSE·sqrt(N²/n + N), a cell area in ha, N cells, n plots; CI = total ± t(n-1)·SE).",
    {"model": {"title": "Model", "description": "Id of a stored area model (/area-models)", "minOccurs": 1,
               "maxOccurs": 1, "schema": {"type": "integer", "minimum": 1}},
     "scan": scan_input("Id of the scan whose grid metrics are predicted (grid-metrics at the model's resolution)"),
     "stand": {"title": "Stand", "description": "A GeoJSON Polygon or MultiPolygon (CRS84) to total the attribute "
                                                "over", "minOccurs": 0, "maxOccurs": 1,
               "schema": {"type": "object", "required": ["type", "coordinates"],
                          "properties": {"type": {"type": "string", "enum": ["Polygon", "MultiPolygon"]}}}},
     "level": {"title": "Confidence level", "description": "of the totals' interval", "minOccurs": 0,
               "maxOccurs": 1, "schema": {"type": "number", "minimum": 0.5, "maximum": 0.999, "default": 0.95}}},
    {"aba": link_output("The prediction (COG: attribute per ha, extrapolation flag)",
                        "image/tiff; application=geotiff; profile=cloud-optimized"),
     "totals": {"title": "Totals with confidence intervals", "schema": {"type": "object"}}})
PROCESS_METADATA["example"] = {"inputs": {"model": 1, "scan": 1}}


def _total_unit(unit: str | None) -> str | None:
    if unit and unit.endswith("/ha"):
        return unit[:-3] or "1"
    return None if unit is None else f"({unit})·ha"


class PredictAreaModelProcessor(CanopyProcess):
    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        scan = ctx.scan(inputs["scan"])
        row = ctx.area_model(int(inputs["model"]))
        params = row["parameters"]
        blob = bytes(row["model"]) if row["model"] is not None else None
        model = aba.Model.from_dict(params, blob)
        res = float(row["resolution_m"])
        ctx.progress(5, "finding the scan's grid metrics")
        rasters = ctx.grid_metrics(scan)
        match = [r for r in rasters if abs(r["resolution_m"] - res) <= 1e-6 * res]
        try:
            if not match:
                have = sorted({r["resolution_m"] for r in rasters})
                raise aba.ResolutionMismatch(
                    f"scan {scan.id} has no grid metrics at the model's {res:g} m (it has {have or 'none'}): run "
                    f"grid-metrics with resolution {res:g}")
            check_resolution([params["plot_area_m2"]], res)
            data, meta = read_raster(match[0]["path"])
            ctx.progress(30, f"predicting {row['attribute']} over {data.shape[1] * data.shape[2]} cells")
            pred = predict_grid(model, data, meta["band_names"])
        except LidarError as err:
            raise ProcessInputError(str(err))
        crs = meta["crs"]
        units = crs.linear_units_factor[1] if crs.is_projected else 1.0
        t = meta["transform"]
        grid = Grid(t.c * units, t.f * units, abs(t.a) * units, data.shape[1], data.shape[2])
        rmse, n = row["validation"]["rmse"], int(params["n_plots"])
        level = float(inputs.get("level", 0.95))
        totals = {"scan": total(pred.values, None, grid.res ** 2, rmse, n, level)}
        if inputs.get("stand"):
            mask = self._stand_mask(inputs["stand"], crs, t, data.shape[1:])
            totals["stand"] = total(pred.values, mask, grid.res ** 2, rmse, n, level)
            totals["stand"]["extrapolated_share"] = float(pred.extrapolated[mask & np.isfinite(pred.values)].mean()) \
                if (mask & np.isfinite(pred.values)).any() else 0.0
        for v in totals.values():
            v["unit"] = _total_unit(row["unit"])
        ctx.progress(70, "writing the prediction")
        out = ctx.workdir / "products"
        out.mkdir(parents=True, exist_ok=True)
        flag = np.where(np.isfinite(pred.values), pred.extrapolated.astype(np.float32), np.nan)
        path = write_cog(out / "aba.tif", np.stack([pred.values, flag]).astype(np.float32), grid, crs,
                         (row["attribute"], "extrapolated"), to_native=1 / units, units=[row["unit"] or "1", "1"])
        summary = {"products": {"aba": str(path)}, "crs_wkt": crs.to_wkt(), "crs_epsg": crs.to_epsg(),
                   "units_to_metre": units}
        artifacts = raster_artifacts(scan, summary, {"aba": "aba"})
        valid = np.isfinite(pred.values)
        outputs = {"model": row["id"], "attribute": row["attribute"], "unit": row["unit"], "method": row["method"],
                   "resolution_m": res, "cells": int(valid.sum()), "extrapolated_share": pred.extrapolated_share,
                   "mean_per_ha": float(np.nanmean(pred.values)) if valid.any() else None,
                   "validation": {k: row["validation"][k] for k in ("scheme", "rmse", "rmse_pct", "bias", "r2")},
                   "totals": totals}
        return Outcome(outputs=outputs, artifacts=artifacts)

    @staticmethod
    def _stand_mask(geojson: dict, crs: CRS, transform, shape) -> np.ndarray:
        from rasterio.features import geometry_mask
        try:
            geom = shapely.geometry.shape(geojson)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ProcessInputError(f"stand is not a valid GeoJSON polygon: {err}")
        if geom.is_empty or not geom.is_valid:
            raise ProcessInputError("stand is empty or not a valid polygon")
        to_scan = Transformer.from_crs(4326, crs, always_xy=True)
        native = shapely_transform(to_scan.transform, geom)
        # a cell belongs to the stand when its centre is inside
        return geometry_mask([native], out_shape=shape, transform=transform, invert=True, all_touched=False)
