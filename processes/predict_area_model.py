"""`predict-area-model`: stored area models applied to every cell of a scan's grid metrics.
Writes one COG (raster kind `aba`): for n models, bands 1..n each model's attribute per
hectare (its unit in the band's `units` tag), then bands n+1..2n their extrapolation
flags (1 where a metric the model reads is outside the plots' range). Totals over the
scan and, on request, over a stand polygon, with a confidence interval from each
model's cross-validated RMSE (:func:`processes.lidar.aba_map.total`)."""

from __future__ import annotations

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.ops import transform as shapely_transform

from .base import CanopyProcess, JobContext, Outcome, ProcessInputError, scan_input
from .lidar import aba
from .lidar.aba_map import check_resolution, footprint_share, predict_grid, total
from .lidar.cog import read_raster, write_cog
from .lidar.errors import LidarError
from .lidar.grid import Grid
from .lidar_job import link_output, metadata, raster_artifacts

PROCESS_METADATA = metadata(
    "predict-area-model", "Map area-based models",
    "Applies stored area models (fit-area-model, /area-models/{id}) of one resolution to the scan's grid metrics "
    "at that resolution: one COG whose bands 1..n are the models' attributes per hectare (with their units) and "
    "n+1..2n their extrapolation flags, served as tiles; per model, totals over the scan and over an optional "
    "stand polygon with a confidence interval (SE = a·RMSE·sqrt(N²/n + N), a cell area in ha, N cells, n plots; "
    "CI = total ± t(n-1)·SE).",
    {"model": {"title": "Models", "description": "Id of a stored area model (/area-models), or a list of ids of "
                                                 "models fitted at the same resolution", "minOccurs": 1,
               "maxOccurs": 1, "schema": {"oneOf": [{"type": "integer", "minimum": 1},
                                                    {"type": "array", "items": {"type": "integer", "minimum": 1},
                                                     "minItems": 1, "maxItems": 20, "uniqueItems": True}]}},
     "scan": scan_input("Id of the scan whose grid metrics are predicted (grid-metrics at the model's resolution)"),
     "stand": {"title": "Stand", "description": "A GeoJSON Polygon or MultiPolygon (CRS84) to total the attribute "
                                                "over", "minOccurs": 0, "maxOccurs": 1,
               "schema": {"type": "object", "required": ["type", "coordinates"],
                          "properties": {"type": {"type": "string", "enum": ["Polygon", "MultiPolygon"]}}}},
     "level": {"title": "Confidence level", "description": "of the totals' interval", "minOccurs": 0,
               "maxOccurs": 1, "schema": {"type": "number", "minimum": 0.5, "maximum": 0.999, "default": 0.95}}},
    {"aba": link_output("The prediction (COG: attributes per ha, then their extrapolation flags)",
                        "image/tiff; application=geotiff; profile=cloud-optimized"),
     "predictions": {"title": "Per model: its band, totals with confidence intervals, extrapolated share",
                     "schema": {"type": "array", "items": {"type": "object"}}}})
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
        ids = inputs["model"] if isinstance(inputs["model"], list) else [inputs["model"]]
        rows = [ctx.area_model(int(i)) for i in ids]
        res = float(rows[0]["resolution_m"])
        other = [r["id"] for r in rows if abs(float(r["resolution_m"]) - res) > 1e-6 * res]
        if other:
            raise ProcessInputError(f"models {other} were fitted at another resolution than model {rows[0]['id']} "
                                    f"({res:g} m): map them in another job")
        ctx.progress(5, "finding the scan's grid metrics")
        rasters = ctx.grid_metrics(scan)
        match = [r for r in rasters if abs(r["resolution_m"] - res) <= 1e-6 * res]
        try:
            if not match:
                have = sorted({r["resolution_m"] for r in rasters})
                raise aba.ResolutionMismatch(
                    f"scan {scan.id} has no grid metrics at the models' {res:g} m (it has {have or 'none'}): run "
                    f"grid-metrics with resolution {res:g}")
            for r in rows:
                check_resolution([r["parameters"]["plot_area_m2"]], res)
            data, meta = read_raster(match[0]["path"])
            ctx.progress(30, f"predicting {', '.join(r['attribute'] for r in rows)} over "
                             f"{data.shape[1] * data.shape[2]} cells")
            preds = [predict_grid(aba.Model.from_dict(r["parameters"], bytes(r["model"]) if r["model"] is not None
                                                      else None), data, meta["band_names"]) for r in rows]
        except LidarError as err:
            raise ProcessInputError(str(err))
        crs = meta["crs"]
        units = crs.linear_units_factor[1] if crs.is_projected else 1.0
        t = meta["transform"]
        grid = Grid(t.c * units, t.f * units, abs(t.a) * units, data.shape[1], data.shape[2])
        level = float(inputs.get("level", 0.95))
        stand = self._stand_mask(inputs["stand"], crs, t, data.shape[1:]) if inputs.get("stand") else None
        wkt = ctx.footprint(scan)
        outline = shapely.from_wkt(wkt) if wkt else None
        share = footprint_share(outline, t, data.shape[1:]) if outline is not None and not outline.is_empty else None
        predictions = [self._summary(i + 1, row, pred, grid, level, stand, share) for i, (row, pred) in
                       enumerate(zip(rows, preds))]
        ctx.progress(70, "writing the prediction")
        out = ctx.workdir / "products"
        out.mkdir(parents=True, exist_ok=True)
        flags = [np.where(np.isfinite(p.values), p.extrapolated.astype(np.float32), np.nan) for p in preds]
        names = [r["attribute"] for r in rows] + [f"{r['attribute']}_extrapolated" for r in rows]
        path = write_cog(out / "aba.tif", np.stack([p.values for p in preds] + flags).astype(np.float32), grid, crs,
                         names, to_native=1 / units, units=[r["unit"] or "1" for r in rows] + ["1"] * len(rows))
        summary = {"products": {"aba": str(path)}, "crs_wkt": crs.to_wkt(), "crs_epsg": crs.to_epsg(),
                   "units_to_metre": units}
        artifacts = raster_artifacts(scan, summary, {"aba": "aba"})
        outputs = {"resolution_m": res, "predictions": predictions}
        return Outcome(outputs=outputs, artifacts=artifacts)

    @staticmethod
    def _summary(band: int, row: dict, pred, grid: Grid, level: float, stand: np.ndarray | None,
                 share: np.ndarray | None) -> dict:
        """One model's figures: its band, mean, extrapolated share, totals over the scan and the
        stand (cells cut by the footprint's edge count by their share inside it)."""
        rmse, n = row["validation"]["rmse"], int(row["parameters"]["n_plots"])
        valid = np.isfinite(pred.values)
        totals = {"scan": total(pred.values, None, grid.res ** 2, rmse, n, level, share)}
        if stand is not None:
            totals["stand"] = total(pred.values, stand, grid.res ** 2, rmse, n, level, share)
            inside = stand & valid
            totals["stand"]["extrapolated_share"] = float(pred.extrapolated[inside].mean()) if inside.any() else 0.0
        for v in totals.values():
            v["unit"] = _total_unit(row["unit"])
        return {"model": row["id"], "band": band, "attribute": row["attribute"], "unit": row["unit"],
                "method": row["method"], "extrapolated_share": pred.extrapolated_share,
                "mean_per_ha": float(np.nanmean(pred.values)) if valid.any() else None,
                "validation": {k: row["validation"][k] for k in ("scheme", "rmse", "rmse_pct", "bias", "r2")},
                "totals": totals}

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
