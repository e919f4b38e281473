"""`ingest-scan`: reads an uploaded scan's headers and points once and records what it
is — LAS version, point format, point count, CRS, bounds, footprint (a hull of the
points, in EPSG:4326), density and what is suspect in its files (warnings) — then marks
it `ready` (or `failed`, with why). Each file passes the same check as at upload
(`inspect` with the scan's CRS override, then `require_usable`)."""

from __future__ import annotations

import json

from pyproj import CRS

from .base import CanopyProcess, JobContext, Outcome, scan_input
from .lidar.footprint import footprint
from .lidar.validate import inspect, require_usable
from .lidar_job import link_output, metadata, to_wgs84

PROCESS_METADATA = metadata(
    "ingest-scan", "Ingest a scan",
    "Validates the files of an uploaded scan and records its header facts, CRS, footprint and density.",
    {"scan": scan_input("Id of the uploaded scan")},
    {"scan": link_output("The scan, now ready")})


class IngestScanProcessor(CanopyProcess):
    def __init__(self, processor_def: dict):
        super().__init__(processor_def, PROCESS_METADATA)

    def run(self, inputs: dict, ctx: JobContext) -> Outcome:
        scan = ctx.scan(inputs["scan"])
        headers = []
        for i, path in enumerate(scan.files):
            ctx.progress(5 * i / len(scan.files), f"checking {path.name}")
            headers.append(inspect(path, crs=scan.crs))
            require_usable(headers[-1])
        facts = footprint([str(f) for f in scan.files], crs=scan.crs,
                          progress=lambda pct, msg: ctx.progress(5 + 0.9 * pct, msg))
        hull = facts["footprint"]
        if hull.geom_type != "Polygon":
            hull = hull.convex_hull
        hull_4326 = to_wgs84(CRS.from_user_input(facts["crs"]))(hull)
        first = headers[0]
        ground = [h["has_ground_class"] for h in headers]
        values = {
            "status": "ready", "error": None,
            "las_version": first["las_version"], "point_format": first["point_format"],
            "point_count": int(facts["point_count"]), "crs_epsg": facts["crs_epsg"], "crs_wkt": facts["crs_wkt"],
            "bounds_native": [float(v) for v in facts["bounds"]], "density_pts_m2": float(facts["density"]),
            "first_returns_m2": float(facts["first_density"]),
            "classified_ground": None if None in ground else all(ground),
            "footprint_wkt4326": hull_4326.wkt,
            "warnings": json.dumps(list(dict.fromkeys(w for h in headers for w in h["warnings"]))),
        }
        return Outcome(outputs={"point_count": values["point_count"], "crs_epsg": facts["crs_epsg"],
                                "density_pts_m2": values["density_pts_m2"]},
                       artifacts=[{"kind": "scan", "scan_id": scan.id, "values": values,
                                   "file_count": len(scan.files)}])

    def failure_artifacts(self, inputs: dict, message: str) -> list[dict]:
        """A scan that cannot be ingested is marked failed with the reason."""
        return [{"kind": "scan", "scan_id": inputs["scan"], "values": {"status": "failed", "error": message}}]
