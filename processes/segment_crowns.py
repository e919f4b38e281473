"""`segment-crowns`: Crowns of the detected trees by marker-controlled watershed or Dalponte 2016 region growing."""

from __future__ import annotations

from .base import CanopyProcess
from .lidar_job import (CANOPY_INPUTS, COMMON_INPUTS, CROWN_INPUTS, GROUND_INPUTS, TREE_INPUTS, ProductProcess,
                        link_output, metadata, resolution_input)

PROCESS_METADATA = metadata(
    "segment-crowns", "Segment crowns",
    "Crowns of the detected trees by marker-controlled watershed or Dalponte 2016 region growing.",
    {**COMMON_INPUTS, **GROUND_INPUTS, **CANOPY_INPUTS, **TREE_INPUTS, **CROWN_INPUTS,
     **resolution_input(None, "canopy height model")},
    {"trees": link_output("Trees"), "crowns": link_output("Crowns")})


class SegmentCrownsProcessor(ProductProcess, CanopyProcess):
    products = {"chm", "trees", "crowns"}
    rasters = {}
    trees = True
    resolution_field = "chm_res"

    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)
