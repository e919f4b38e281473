"""`canopy-height-model`: Pit-free canopy height model (Khosravipour et al. 2014) of the height-normalised points."""

from __future__ import annotations

from .base import CanopyProcess
from .lidar_job import (CANOPY_INPUTS, COMMON_INPUTS, GROUND_INPUTS, ProductProcess, link_output, metadata,
                        resolution_input)

PROCESS_METADATA = metadata(
    "canopy-height-model", "Canopy height model",
    "Pit-free canopy height model (Khosravipour et al. 2014) of the height-normalised points.",
    {**COMMON_INPUTS, **GROUND_INPUTS, **CANOPY_INPUTS, **resolution_input(None, "canopy height model")},
    {"chm": link_output("Canopy height model (COG)")})


class CanopyHeightModelProcessor(ProductProcess, CanopyProcess):
    products = {"chm"}
    rasters = {"chm": "chm"}
    trees = False
    resolution_field = "chm_res"

    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)
