"""`classify-ground`: Finds the ground points (the file's class 2 or the cloth simulation filter) and reports the ground share; the terrain model is kept as evidence."""

from __future__ import annotations

from .base import CanopyProcess
from .lidar import Params
from .lidar_job import (COMMON_INPUTS, GROUND_INPUTS, ProductProcess, link_output, metadata,
                        resolution_input)

PROCESS_METADATA = metadata(
    "classify-ground", "Classify ground",
    "Finds the ground points (the file's class 2 or the cloth simulation filter) and reports the ground share; the terrain model is kept as evidence.",
    {**COMMON_INPUTS, **GROUND_INPUTS, **resolution_input(Params.dtm_res, "terrain model")},
    {"dtm": link_output("Terrain model (COG)"), "summary": {"title": "Ground share", "schema": {"type": "object"}}})


class ClassifyGroundProcessor(ProductProcess, CanopyProcess):
    products = {"dtm"}
    rasters = {"dtm": "dtm"}
    trees = False
    resolution_field = "dtm_res"

    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)
