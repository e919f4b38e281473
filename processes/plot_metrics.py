"""`plot-metrics`: LiDAR metrics of the height-normalised points inside each plot,
stored on the plot (`metrics`)."""

from __future__ import annotations

from .base import CanopyProcess, JobContext, Outcome
from .lidar_job import (COMMON_INPUTS, GROUND_INPUTS, link_output, metadata, engine_params, plot_metrics_artifact,
                        plots_input)

PROCESS_METADATA = metadata(
    "plot-metrics", "Plot metrics",
    "lidR's standard height metrics, cover, intensity and return metrics and the leaf area density profile per plot.",
    {**COMMON_INPUTS, **plots_input(), **GROUND_INPUTS}, {"plots": link_output("Plots with their metrics")})


class PlotMetricsProcessor(CanopyProcess):
    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        scan = ctx.scan(inputs["scan"])
        artifact, n = plot_metrics_artifact(ctx, scan, inputs.get("plots"), engine_params(inputs), span=(0, 99))
        return Outcome(outputs={"summary": {"plots": n}}, artifacts=[artifact])
