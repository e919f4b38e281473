"""What every Canopy process plugin is: a pygeoapi processor that runs inside a job.

A process receives validated inputs and a `JobContext` (given by the job system:
progress reporting that also carries cancellation, a private work directory, and
the scans and plots it may read) and returns an `Outcome`: the outputs the client
sees and the artifacts (rasters, trees, crowns, plot metrics, scan facts) that the
job system commits — files and database rows — in one step at the end. A process
writes nothing anywhere else, so a re-run or a failure never leaves half a result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pygeoapi.process.base import BaseProcessor


class ProcessInputError(ValueError):
    """Bad input a user can fix: the job fails at once, with this message, no retry."""


class WaitForChildren(Exception):
    """Raised by `JobContext.fan_out` when the child jobs were just queued: the job
    waits (holding no worker) and runs again once every child has succeeded."""


@dataclass
class ScanInput:
    id: int
    project_id: int
    files: list[Path]
    crs: str | None               # CRS override given at upload, e.g. "EPSG:2992"
    crs_epsg: int | None          # CRS found at ingestion
    first_density: float | None = None  # first returns per m² of its footprint, found at ingestion


@dataclass
class RunInput:
    """The products of an earlier run (a successful job's id) that a process reads."""
    id: str
    scan_id: int
    project_id: int
    process_id: str
    chm: Path | None              # the run's canopy height model (COG), a local file
    trees: dict[str, Any]         # x, y (native CRS), height, crown_diameter: numpy arrays


@dataclass
class PlotInput:
    id: int
    geometry_wkt: str             # in the scan's CRS


class JobContext(Protocol):
    job_id: str
    workdir: Path

    def progress(self, percent: float, message: str) -> None:
        """Report progress; raises if the job has been dismissed."""

    def scan(self, scan_id: int) -> ScanInput:
        """A scan the caller may use (raises ProcessInputError otherwise)."""

    def run(self, run_id: str) -> RunInput:
        """An earlier run the caller may read (raises ProcessInputError otherwise)."""

    def plots(self, scan: ScanInput, plot_ids: list[int] | None) -> list[PlotInput]:
        """The given plots, or the plots that intersect the scan, in the scan's CRS."""

    def plot_records(self, scan: ScanInput, plot_ids: list[int] | None) -> list[dict]:
        """Plots (given, or intersecting the scan) with `id`, `attributes`, `metrics`, `area_m2`
        and `covered` (inside the scan's footprint)."""

    def footprint(self, scan: ScanInput) -> str | None:
        """The scan's footprint (WKT in the scan's CRS; None before ingestion)."""

    def area_model(self, model_id: int) -> dict:
        """A stored area model of the job's project (its row, `model` the serialised forest)."""

    def grid_metrics(self, scan: ScanInput) -> list[dict]:
        """The scan's grid-metrics rasters, newest first: `path`, `resolution_m`, `run_id`, `bands`."""

    def share_part(self, path: Path, name: str) -> None:
        """Hand the local file `path` (consumed) to the job's parent, or to this job's
        children, as `name`: stored where every worker reaches it."""

    def part(self, name: str) -> Path:
        """A part shared under `name` by this job or a relative, as a local file."""

    def fan_out(self, process_id: str, children: list[dict]) -> list[dict]:
        """Run each input dict as a child job of `process_id`; their outputs, in order, once
        all have succeeded. The first call queues them and raises WaitForChildren."""


@dataclass
class Outcome:
    outputs: dict[str, Any]
    artifacts: list[dict[str, Any]] = field(default_factory=list)


class CanopyProcess(BaseProcessor):
    """Base of the process plugins. `sync` marks processes small enough to run
    inside the web request when the client does not ask for async execution."""

    sync = False
    run_inputs: tuple[str, ...] = ()   # inputs naming runs (job ids) it reads: the caller must read them

    def __init__(self, processor_def: dict, metadata: dict):
        super().__init__(processor_def, metadata)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        raise NotImplementedError

    def execute(self, data: dict, outputs=None):
        raise NotImplementedError("Canopy runs processes through its job system (server/jobs)")


def scan_input(description: str = "Id of the scan to process") -> dict:
    return {"title": "Scan", "description": description, "minOccurs": 1, "maxOccurs": 1,
            "schema": {"type": "integer", "minimum": 1}}


def number_input(title: str, description: str, default: float | None, minimum: float, maximum: float,
                 exclusive_minimum: bool = False) -> dict:
    """A number input; ``default`` None: none in the schema (the process chooses, and says how)."""
    schema: dict[str, Any] = {"type": "number", "maximum": maximum}
    if default is not None:
        schema["default"] = default
    schema["exclusiveMinimum" if exclusive_minimum else "minimum"] = minimum
    return {"title": title, "description": description, "minOccurs": 0, "maxOccurs": 1, "schema": schema}
