"""`detect-trees`: Individual tree tops by a local maximum filter on the canopy height model (fixed or height-variable window)."""

from __future__ import annotations

from .base import CanopyProcess
from .lidar_job import (CANOPY_INPUTS, COMMON_INPUTS, GROUND_INPUTS, TREE_INPUTS, ProductProcess, link_output, metadata,
                        resolution_input)

PROCESS_METADATA = metadata(
    "detect-trees", "Detect trees",
    "Individual tree tops by a local maximum filter on the canopy height model (fixed or height-variable window).",
    {**COMMON_INPUTS, **GROUND_INPUTS, **CANOPY_INPUTS, **TREE_INPUTS, **resolution_input(None, "canopy height model")},
    {"trees": link_output("Trees")})


class DetectTreesProcessor(ProductProcess, CanopyProcess):
    products = {"chm", "trees"}
    rasters = {}
    trees = True
    resolution_field = "chm_res"

    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)
