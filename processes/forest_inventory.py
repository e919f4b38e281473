"""`forest-inventory`: the whole pipeline over a scan in one streaming pass — ground,
terrain model, canopy height model, trees, crowns, grid metrics and plot metrics."""

from __future__ import annotations

from server.settings import get_settings

from .base import CanopyProcess, JobContext, Outcome
from .lidar import Params, merge_tile_results, plan_tiles
from .lidar.pipeline import ALL_PRODUCTS
from .lidar.read import open_scan
from .lidar_job import (CANOPY_INPUTS, COMMON_INPUTS, CROWN_INPUTS, GROUND_INPUTS, TREE_INPUTS, link_output, metadata,
                        number_input, engine_params, plot_metrics_artifact, plots_input, raster_artifacts,
                        run_scan, tree_artifact)

PROCESS_METADATA = metadata(
    "forest-inventory", "Forest inventory",
    "Ground, DTM, pit-free CHM, trees, crowns, grid metrics and plot metrics of a scan in one pass.",
    {**COMMON_INPUTS, **plots_input(),
     "resolution": number_input("CHM resolution", "Cell size of the canopy height model (m); default: from the "
                                "scan's first-return spacing (0.5 m from 2.8 first returns/m²)", None, 0.1, 10),
     "dtm_resolution": number_input("DTM resolution", "Cell size of the terrain model (m)", Params.dtm_res, 0.25, 50),
     "metrics_resolution": number_input("Metrics resolution", "Cell size of the grid metrics (m)", Params.metrics_res,
                                        1, 1000),
     **GROUND_INPUTS, **CANOPY_INPUTS, **TREE_INPUTS, **CROWN_INPUTS},
    {"dtm": link_output("Terrain model (COG)"), "chm": link_output("Canopy height model (COG)"),
     "metrics": link_output("Grid metrics (COG, one band per metric)"), "trees": link_output("Trees"),
     "crowns": link_output("Crowns"), "plots": link_output("Plots with their metrics"),
     "summary": {"title": "Summary", "schema": {"type": "object"}}})


class ForestInventoryProcessor(CanopyProcess):
    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        scan = ctx.scan(inputs["scan"])
        fields = {"dtm_res": float(inputs["dtm_resolution"]), "metrics_res": float(inputs["metrics_resolution"])}
        if "resolution" in inputs:
            fields["chm_res"] = float(inputs["resolution"])
        params = engine_params(inputs, **fields)
        opened = open_scan([str(f) for f in scan.files], crs=scan.crs)
        if opened.point_count > fanout_threshold():
            # the tiles must share one CHM cell: chosen from the density measured at ingestion
            # (a scan ingested before that was measured keeps the finest cell)
            params = params.for_scan(scan.first_density or float("inf"))
            summary = self._fanned_out(ctx, scan, opened, params)
        else:
            summary = run_scan(ctx, scan, inputs, set(ALL_PRODUCTS), params, span=(0, 85))
        plots, n_plots = plot_metrics_artifact(ctx, scan, inputs.get("plots"), params, span=(85, 99))
        artifacts = raster_artifacts(scan, summary, {"dtm": "dtm", "chm": "chm", "grid_metrics": "metrics"})
        artifacts += [tree_artifact(scan, summary), plots]
        keep = ("point_count", "ground_share", "canopy_cover", "tree_count", "tree_height_mean",
                "tree_height_max", "area_ha", "crs_epsg", "tiles")
        return Outcome(outputs={"summary": {k: summary.get(k) for k in keep} | {"plots": n_plots}},
                       artifacts=artifacts)

    @staticmethod
    def _fanned_out(ctx: JobContext, scan, opened, params) -> dict:
        """Buffered tiles as child jobs on any worker, then one merge: rasters mosaicked
        into COGs, trees kept once (each belongs to the tile whose core holds its top);
        the summary is the one a run in one process gives."""
        _, cores = plan_tiles(opened.bounds_m, params)
        children = [{"scan": scan.id, "core": list(core), "index": i, "params": params.to_dict()}
                    for i, core in enumerate(cores)]
        results = ctx.fan_out("inventory-tile", children)          # first call: queues them and waits
        ctx.progress(86, f"merging {len(results)} tiles")
        return merge_tile_results([ctx.part(r["part"]) for r in results], ctx.workdir / "products",
                                  inputs=[str(f) for f in scan.files], crs=scan.crs, params=params,
                                  products=ALL_PRODUCTS)


def fanout_threshold() -> int:
    """Scans with more points than this run as one child job per tile."""
    return get_settings().fanout_points
