"""`fit-area-model`: models of the plots' measured attributes from their LiDAR metrics
(the area-based approach), validated by cross-validation and stored in `area_models`
(listed at /area-models). The work is :mod:`processes.lidar.aba`; the plots' metrics are
those the `plot-metrics` process wrote on them."""

from __future__ import annotations

import math

import numpy as np

from .base import CanopyProcess, JobContext, Outcome, ProcessInputError, scan_input
from .lidar import aba
from .lidar.aba_map import check_coverage, check_resolution
from .lidar.errors import LidarError
from .lidar_job import link_output, metadata

PROCESS_METADATA = metadata(
    "fit-area-model", "Fit area-based models",
    "For each attribute measured on the field plots (plots.attributes), a model from the plots' LiDAR metrics "
    "(computed by plot-metrics): linear regression on at most max_metrics metrics chosen by best-subset selection "
    "(BIC; at least 10 plots per metric), optionally on the log scale, or a random forest; validated by k-fold "
    "or leave-one-out cross-validation (RMSE, RMSE %, bias, R², observed vs predicted, beside a mean-only "
    "baseline). Each model is stored and listed at /area-models/{id}; predict-area-model maps it.",
    {"scan": scan_input("Id of the scan whose plot metrics the models are fitted on"),
     "attributes": {"title": "Attributes", "description": "Names of numeric plot attributes (plots.attributes keys)",
                    "minOccurs": 1, "maxOccurs": 1,
                    "schema": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64},
                               "minItems": 1, "maxItems": 20}},
     "method": {"title": "Method", "description": "linear (best-subset OLS) or rf (random forest)",
                "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "string", "enum": ["linear", "rf"],
                                                          "default": "linear"}},
     "log": {"title": "Log scale", "description": "linear: fit ln(attribute) on ln(metrics), back-transformed with "
                                                  "Duan's smearing", "minOccurs": 0, "maxOccurs": 1,
             "schema": {"type": "boolean", "default": False}},
     "max_metrics": {"title": "Largest number of metrics", "description": "linear: default min(3, plots / 10)",
                     "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "integer", "minimum": 1, "maximum": 6}},
     "validation": {"title": "Validation", "description": "k-fold (an integer k) or loo (leave-one-out)",
                    "minOccurs": 0, "maxOccurs": 1,
                    "schema": {"oneOf": [{"type": "integer", "minimum": 2, "maximum": 100},
                                         {"type": "string", "enum": ["loo"]}], "default": aba.KFOLD}},
     "units": {"title": "Units", "description": "Unit of each attribute, e.g. {\"volume\": \"m3/ha\"} (default: "
                                                "plots.attributes.units, else none)",
               "minOccurs": 0, "maxOccurs": 1, "schema": {"type": "object", "additionalProperties": {"type": "string"}}},
     "plots": {"title": "Plots", "description": "Plot ids (default: the plots that intersect the scan and carry "
                                                "the attributes)", "minOccurs": 0, "maxOccurs": 1,
               "schema": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 10000}}},
    {"models": link_output("The stored models with their cross-validated accuracy")})
PROCESS_METADATA["example"] = {"inputs": {"scan": 1, "attributes": ["volume", "basal_area", "stems"]}}


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


class FitAreaModelProcessor(CanopyProcess):
    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        scan = ctx.scan(inputs["scan"])
        attributes = list(dict.fromkeys(inputs["attributes"]))
        method, log = inputs.get("method", "linear"), bool(inputs.get("log", False))
        folds = inputs.get("validation", aba.KFOLD)
        ctx.progress(2, "reading the plots")
        plots = ctx.plot_records(scan, inputs.get("plots"))
        plots = [p for p in plots if isinstance(p["attributes"], dict) and
                 any(_number(p["attributes"].get(a)) is not None for a in attributes)]
        if not plots:
            raise ProcessInputError(f"no plot of scan {scan.id} carries {attributes} as numbers")
        try:
            check_coverage([p["id"] for p in plots], [p["covered"] for p in plots])
            missing = [p["id"] for p in plots if not p["metrics"]]
            if missing:
                raise ProcessInputError(f"plots {missing[:20]} have no LiDAR metrics: run plot-metrics on scan "
                                        f"{scan.id}")
            areas = [p["area_m2"] for p in plots]
            resolution = self._resolution(ctx, scan, areas)
            models = []
            for i, attr in enumerate(attributes):
                use = [p for p in plots if _number(p["attributes"].get(attr)) is not None]
                y = np.array([_number(p["attributes"][attr]) for p in use])
                table = {m: np.array([np.nan if _number(p["metrics"].get(m)) is None else p["metrics"][m]
                                      for p in use], float) for m in aba.DEFAULT_METRICS}
                ctx.progress(5 + 90 * i / len(attributes), f"{attr}: fitting and cross-validating on {len(use)} plots")
                args = dict(method=method, log=log, max_metrics=inputs.get("max_metrics"))
                validation = aba.cross_validate(y, table, folds=folds, **args)
                model = aba.fit(y, table, attribute=attr, **args)
                unit = (inputs.get("units") or {}).get(attr) or _unit_of(use, attr)
                params = model.to_dict() | {"plot_area_m2": float(np.mean([p["area_m2"] for p in use])),
                                            "n_plots": len(use), "plot_ids": [p["id"] for p in use]}
                models.append({"attribute": attr, "unit": unit, "method": method, "metrics": model.metrics,
                               "resolution_m": resolution, "parameters": params,
                               "validation": validation.to_dict() | {"plot_ids": [p["id"] for p in use]},
                               "blob": model.blob()})
        except LidarError as err:
            raise ProcessInputError(str(err))
        art = {"kind": "area_model", "scan_id": scan.id, "plots": [p["id"] for p in plots], "models": models}
        outputs = {"scan": scan.id, "plots": len(plots), "resolution_m": resolution}
        return Outcome(outputs=outputs, artifacts=[art])

    @staticmethod
    def _resolution(ctx: JobContext, scan, areas: list[float]) -> float:
        """The grid cell the model applies to: the scan's grid metrics' when they match the
        plots' area, else the side of the plots' mean area."""
        existing = ctx.grid_metrics(scan)
        for r in existing:
            try:
                check_resolution(areas, r["resolution_m"])
                return float(r["resolution_m"])
            except aba.ResolutionMismatch:
                continue
        return round(math.sqrt(float(np.mean(areas))), 1)   # predict-area-model refuses other cells


def _unit_of(plots: list[dict], attr: str) -> str | None:
    for p in plots:
        units = p["attributes"].get("units")
        if isinstance(units, dict) and isinstance(units.get(attr), str):
            return units[attr]
    return None
