"""`compare`: what changed between two runs — two inventories of one scan, or of two scans
of the same forest from different years. Writes the CHM difference (after − before) and a
change-class map as COGs, with the area of every class (canopy lost to harvest or
disturbance, gained, grown, stable, open) and the height growth of the trees matched
between the two runs. The work is :func:`processes.lidar.change.compare`."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import rasterio

from .base import CanopyProcess, JobContext, Outcome, ProcessInputError, RunInput, ScanInput, number_input
from .lidar.change import CLASSES, PARAMETERS, ChangeParams, compare, write_products
from .lidar.errors import InvalidParameter
from .lidar_job import link_output, metadata, raster_artifacts

RUN_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
DEFAULTS = ChangeParams()


def _param_inputs() -> dict:
    """One optional number input per ChangeParams field (its default and description from change.py)."""
    out = {}
    for f in fields(ChangeParams):
        description, maximum = PARAMETERS[f.name]
        out[f.name] = number_input(f.name, description, getattr(DEFAULTS, f.name), 0, maximum)
    return out


PROCESS_METADATA = metadata(
    "compare", "Compare two runs",
    "Canopy change between two successful runs (job ids of forest-inventory runs, of one scan or of two scans "
    "of one area): CHM difference raster, change classes (canopy lost, gained, growth, stable, open) with their "
    "areas, and the height growth of trees matched one-to-one between the runs. The products are kept with the "
    "after run's scan.",
    {"before": {"title": "Before", "description": "Id of the earlier run (a successful forest-inventory job)",
                "minOccurs": 1, "maxOccurs": 1, "schema": RUN_SCHEMA},
     "after": {"title": "After", "description": "Id of the later run (a successful forest-inventory job)",
               "minOccurs": 1, "maxOccurs": 1, "schema": RUN_SCHEMA},
     **_param_inputs()},
    {"chm_diff": link_output("CHM difference, after − before (COG, m)"),
     "change": link_output("Change classes (COG, uint8: " + ", ".join(f"{k} {v}" for k, v in CLASSES.items()) + ")"),
     "areas": {"title": "Area per class (cells, m², ha)", "schema": {"type": "object"}},
     "tree_growth": {"title": "Height growth of matched trees; trees lost and new", "schema": {"type": "object"}}})
PROCESS_METADATA["example"] = {"inputs": {"before": "3f0c…", "after": "9a41…", "drop": 3}}


def _run_chm(run: RunInput):
    if run.chm is None:
        raise ProcessInputError(f"run {run.id} ({run.process_id}) has no canopy height model; "
                                "compare forest-inventory runs")
    with rasterio.open(run.chm) as ds:           # float32: half the memory of the library's float64 reader
        data = ds.read(1, masked=True).astype(np.float32).filled(np.nan)
        return data, {"crs": ds.crs, "transform": ds.transform}


class CompareProcessor(CanopyProcess):
    run_inputs = ("before", "after")

    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        try:
            params = ChangeParams(**{f.name: float(inputs[f.name]) for f in fields(ChangeParams) if f.name in inputs})
        except InvalidParameter as err:
            raise ProcessInputError(str(err))
        if inputs["before"] == inputs["after"]:
            raise ProcessInputError("before and after are the same run")
        ctx.progress(2, "reading the two runs")
        before, after = ctx.run(inputs["before"]), ctx.run(inputs["after"])
        chm_b, meta_b = _run_chm(before)
        chm_a, meta_a = _run_chm(after)
        crs = meta_a["crs"]
        if meta_b["crs"] != crs:
            raise ProcessInputError(f"the runs' CHMs are in different CRSs ({meta_b['crs']} and {crs})")
        units = crs.linear_units_factor[1] if crs.is_projected else 1.0
        ctx.progress(20, "comparing canopy height models and trees")

        def trees(run: RunInput) -> dict:
            return {"x": run.trees["x"], "y": run.trees["y"], "height": run.trees["height"],
                    "crown_radius": run.trees["crown_diameter"] / 2}

        try:
            result = compare(chm_b, meta_b["transform"], chm_a, meta_a["transform"], trees(before), trees(after),
                             params, units_to_metre=units)
        except InvalidParameter as err:
            raise ProcessInputError(str(err))
        ctx.progress(80, "writing the difference and change rasters")
        paths = write_products(result, ctx.workdir / "products", crs, units)
        summary = {"products": {k: str(v) for k, v in paths.items()}, "crs_wkt": crs.to_wkt(),
                   "crs_epsg": crs.to_epsg(), "units_to_metre": units}
        scan = ScanInput(id=after.scan_id, project_id=after.project_id, files=[], crs=None, crs_epsg=crs.to_epsg())
        artifacts = raster_artifacts(scan, summary, {"chm_diff": "chm_diff", "change": "change"})
        outputs = {"areas": result.areas, "tree_growth": result.trees,
                   "classes": {str(k): v for k, v in CLASSES.items()},
                   "before": {"run": before.id, "scan": before.scan_id},
                   "after": {"run": after.id, "scan": after.scan_id},
                   "grid": {"resolution_m": abs(result.transform.a) * units, "shape": list(result.diff.shape)},
                   "parameters": params.to_dict()}
        return Outcome(outputs=outputs, artifacts=artifacts)
