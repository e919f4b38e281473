"""The demo forest `make run` loads: one public project with plots in a real place
(Malcolm Knapp Research Forest, British Columbia) and a small synthetic scan record."""

from __future__ import annotations

import json
import math

import psycopg

PROJECT = "Demo forest (Malcolm Knapp Research Forest)"
_CENTER = (-122.573, 49.2825)   # lon, lat


def _square(cx: float, cy: float, half_m: float) -> dict:
    dlat = half_m / 111_320.0
    dlon = half_m / (111_320.0 * math.cos(math.radians(cy)))
    ring = [[cx - dlon, cy - dlat], [cx + dlon, cy - dlat], [cx + dlon, cy + dlat],
            [cx - dlon, cy + dlat], [cx - dlon, cy - dlat]]
    return {"type": "MultiPolygon", "coordinates": [[ring]]}


def load_demo(database_url: str) -> str:
    """Create the demo project once; later calls change nothing."""
    with psycopg.connect(database_url) as conn:
        if conn.execute("SELECT 1 FROM projects WHERE name = %s", (PROJECT,)).fetchone():
            return "demo forest already loaded"
        admin = conn.execute("SELECT id FROM users WHERE role = 'admin' ORDER BY id LIMIT 1").fetchone()
        project_id = conn.execute(
            "INSERT INTO projects (name, visibility, created_by) VALUES (%s, 'public', %s) RETURNING id",
            (PROJECT, admin[0] if admin else None)).fetchone()[0]
        stands = ["Douglas-fir", "Western hemlock", "Western redcedar", "Mixed", "Red alder", "Douglas-fir"]
        for i, species in enumerate(stands):
            cx = _CENTER[0] + (i % 3 - 1) * 0.004
            cy = _CENTER[1] + (i // 3 - 0.5) * 0.003
            conn.execute(
                "INSERT INTO plots (project_id, name, geom, attributes) "
                "VALUES (%s, %s, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), %s)",
                (project_id, f"MKRF plot {i + 1}", json.dumps(_square(cx, cy, 11.28)),
                 json.dumps({"stand": species, "plot_area_m2": 509.0, "established": 2018 + i % 3})))
        footprint = _square(_CENTER[0], _CENTER[1], 450)["coordinates"][0]
        conn.execute(
            "INSERT INTO scans (project_id, name, status, point_count, crs_epsg, las_version, point_format, "
            "density_pts_m2, classified_ground, footprint, acquired_at) VALUES "
            "(%s, 'MKRF synthetic scan 2024', 'ready', 12150000, 3005, '1.4', 6, 15.0, true, "
            "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), '2024-07-15T18:00:00Z')",
            (project_id, json.dumps({"type": "Polygon", "coordinates": footprint})))
        return f"demo forest loaded (project {project_id}, {len(stands)} plots, 1 scan)"
