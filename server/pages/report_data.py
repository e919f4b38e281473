"""What a scan's report shows, gathered from the database and the scan's rasters.

Everything comes from the rows the rest of the API serves — the scan, the trees of its
current run (db/runs.py: the trees the `trees` collection lists), its current CHM and
DTM, the plots over its footprint with their metrics — so the report never disagrees
with the map or the Features API. Stems per hectare are the tree count over the area
of the scan's footprint (as the inventory's summary reports them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.rows import dict_row

from db.pool import get_pool
from db.runs import run_rows
from processes.lidar.metrics import METRIC_NAMES, METRIC_UNITS

UNITS = dict(zip(METRIC_NAMES, METRIC_UNITS))
SHOWN_UNITS = {"metre": "m", "percent": "%", "count": "", "intensity": "", "1": ""}
_FIXED = {
    "zmax": "Highest return height above ground",
    "zmean": "Mean return height above ground",
    "zsd": "Standard deviation of return heights",
    "zskew": "Skewness of return heights",
    "zkurt": "Kurtosis of return heights",
    "zentropy": "Normalised Shannon entropy of the height distribution (1 m layers): 0 one layer, 1 even",
    "pzabovezmean": "Share of returns above the mean height",
    "pzabove2": "Share of returns above 2 m",
    "itot": "Sum of return intensities",
    "imax": "Highest return intensity",
    "imean": "Mean return intensity",
    "isd": "Standard deviation of return intensities",
    "iskew": "Skewness of return intensities",
    "ikurt": "Kurtosis of return intensities",
    "ipground": "Share of the total intensity returned by ground points",
    "pground": "Share of returns classified as ground",
    "n": "Number of returns in the plot",
    "cover": "Canopy cover: share of first returns above 2 m",
    "gap": "Gap fraction: share of last returns at or below 2 m",
    "rumple": "Rumple index: canopy surface area over ground area (1 = flat canopy)",
    "lai": "Leaf area index: the leaf area density profile summed over height (Bouvier et al. 2015)",
}
PLOTS_SHOWN = 12            # plot columns in the table (a printed page is only so wide)


def definition(name: str) -> str:
    """What a plot metric means (lidR's definitions, processes/lidar/metrics.py)."""
    if name in _FIXED:
        return _FIXED[name]
    if name.startswith("zq"):
        return f"{name[2:]}th percentile of return heights"
    if name.startswith("zpcum"):
        return f"Share of returns below {int(name[5:]) * 10}% of the highest return's height"
    if name.startswith("ipcumzq"):
        return f"Share of the total intensity returned below the {name[7:]}th height percentile"
    if name.startswith("p") and name.endswith("th"):
        return f"Share of returns that are return number {name[1:-2]}"
    return name


def decimals(name: str) -> int:
    """Sensible rounding for a metric: 0.1 m, 0.1 %, whole counts and intensities, 0.01 for ratios."""
    unit = UNITS.get(name, "1")
    return {"metre": 1, "percent": 1, "count": 0, "intensity": 0}.get(unit, 2)


@dataclass
class Report:
    scan: dict[str, Any]
    area_m2: float | None
    tree_count: int
    stems_per_ha: float | None
    heights: list[float]
    crown_diameters: list[float]
    summary: dict[str, Any]
    rasters: dict[str, int]                      # kind -> raster id (the current chm, dtm)
    canopy_cover: float | None                   # share of the area under canopy taller than 2 m
    plots: list[dict[str, Any]] = field(default_factory=list)
    plots_total: int = 0


def histogram(values: list[float], width: float, start: float = 0.0) -> tuple[list[str], list[int]]:
    """Counts in classes of `width` from `start` up to the largest value, labelled by their lower bound."""
    if not values:
        return [], []
    top = max(values)
    n = max(1, int(math.floor((top - start) / width)) + 1)
    counts, _ = np.histogram(np.clip(values, start, None), bins=n, range=(start, start + n * width))
    labels = [f"{start + i * width:g}" for i in range(n)]
    return labels, counts.astype(int).tolist()


def gather(scan_id: int) -> Report:
    """The report of a scan the caller may read (the view checks that first)."""
    with get_pool().connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        scan = cur.execute(
            "SELECT id, project_id, name, status, point_count, density_pts_m2, crs_epsg, las_version, point_format, "
            "classified_ground, warnings, size_bytes, acquired_at, created_at, current_run_id, "
            "ST_Area(footprint::geography) AS area_m2 FROM scans WHERE id = %s", (scan_id,)).fetchone()
        trees = conn.execute(sql.SQL("SELECT height_m, crown_diameter_m FROM trees WHERE scan_id = %s AND {}")
                             .format(run_rows("trees", None)), (scan_id,)).fetchall()
        rasters = dict(conn.execute(sql.SQL(
            "SELECT DISTINCT ON (kind) kind, id FROM rasters WHERE scan_id = %s AND kind IN ('chm', 'dtm') AND {} "
            "ORDER BY kind, created_at DESC, id DESC").format(run_rows("rasters", None)), (scan_id,)).fetchall())
        summary = {}
        if scan["current_run_id"]:
            row = conn.execute("SELECT results->'summary' FROM jobs WHERE identifier = %s",
                               (scan["current_run_id"],)).fetchone()
            summary = (row[0] if row else None) or {}
        plots = cur.execute(
            "SELECT p.id, p.name, p.metrics FROM plots p JOIN scans s ON s.id = %s "
            "WHERE p.project_id = s.project_id AND s.footprint IS NOT NULL AND ST_Intersects(p.geom, s.footprint) "
            "ORDER BY p.id", (scan_id,)).fetchall()
    area = scan.pop("area_m2")
    heights = [float(t[0]) for t in trees if t[0] is not None]
    crowns = [float(t[1]) for t in trees if t[1] is not None]
    cover = summary.get("canopy_cover")
    with_metrics = [p for p in plots if p["metrics"]]
    return Report(scan=scan, area_m2=area, tree_count=len(trees),
                  stems_per_ha=len(trees) / (area / 10_000) if area else None,
                  heights=heights, crown_diameters=crowns, summary=summary, rasters=rasters,
                  canopy_cover=float(cover) if cover is not None else None,
                  plots=with_metrics[:PLOTS_SHOWN], plots_total=len(with_metrics))


def metric_rows(plots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric any plot has (in lidR's order): name, unit, definition, values rounded."""
    rows = []
    for name in METRIC_NAMES:
        if not any(name in (p["metrics"] or {}) for p in plots):
            continue
        places = decimals(name)
        values = []
        for p in plots:
            v = (p["metrics"] or {}).get(name)
            values.append("—" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:,.{places}f}")
        rows.append({"name": name, "unit": SHOWN_UNITS.get(UNITS[name], UNITS[name]), "definition": definition(name),
                     "values": values})
    return rows
