"""`grid-metrics`: Area-based metrics per grid cell (lidR's standard height set, cover, rumple...), one raster band per metric."""

from __future__ import annotations

from .base import CanopyProcess
from .lidar_job import (COMMON_INPUTS, GROUND_INPUTS, ProductProcess, link_output, metadata,
                        resolution_input)

PROCESS_METADATA = metadata(
    "grid-metrics", "Grid metrics",
    "Area-based metrics per grid cell (lidR's standard height set, cover, rumple...), one raster band per metric.",
    {**COMMON_INPUTS, **GROUND_INPUTS, **resolution_input(20, "metrics grid")},
    {"metrics": link_output("Grid metrics (COG, one band per metric)")})


class GridMetricsProcessor(ProductProcess, CanopyProcess):
    products = {"grid_metrics"}
    rasters = {"grid_metrics": "metrics"}
    trees = False
    resolution_field = "metrics_res"

    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)
