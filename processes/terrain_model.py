"""`terrain-model`: Digital terrain model: TIN of the ground points with k-NN IDW where the TIN has no triangle."""

from __future__ import annotations

from .base import CanopyProcess
from .lidar import Params
from .lidar_job import (COMMON_INPUTS, GROUND_INPUTS, ProductProcess, link_output, metadata,
                        resolution_input)

PROCESS_METADATA = metadata(
    "terrain-model", "Terrain model",
    "Digital terrain model: TIN of the ground points with k-NN IDW where the TIN has no triangle.",
    {**COMMON_INPUTS, **GROUND_INPUTS, **resolution_input(Params.dtm_res, "terrain model")},
    {"dtm": link_output("Terrain model (COG)")})


class TerrainModelProcessor(ProductProcess, CanopyProcess):
    products = {"dtm"}
    rasters = {"dtm": "dtm"}
    trees = False
    resolution_field = "dtm_res"

    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)
