"""GET /scans/{id}/report: a scan's printable report, rendered on the server as one HTML
page (no script, no CDN: it prints and opens offline), with quicklook PNGs of its CHM
and DTM at /scans/{id}/report/chm.png and dtm.png. The scan's own access policy applies:
a scan the caller may not read is a 404, as everywhere."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from flask import Blueprint, Response, current_app
from jinja2 import Environment, FileSystemLoader, select_autoescape

from db.pool import get_pool

from ..auth import policy
from ..errors import NotFound
from ..tiles import catalog
from ..tiles.render import DEFAULTS, default_rescale, encode_indexed, hillshade, palette, to_indices
from . import report_data, svg

bp = Blueprint("report", __name__)
QUICKLOOK_PX = 512
# the pages' templates (report.html, area_model.html)
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=select_autoescape(["html"]))


def _readable_scan(scan_id: int) -> None:
    with get_pool().connection() as conn:
        row = conn.execute("SELECT project_id FROM scans WHERE id = %s", (scan_id,)).fetchone()
    if row is None:
        raise NotFound(f"no scan {scan_id}")
    try:
        policy.require_project(row[0], policy.READ)
    except NotFound:
        raise NotFound(f"no scan {scan_id}")


@bp.get("/scans/<id:scan_id>/report")
def report(scan_id: int):
    _readable_scan(scan_id)
    data = report_data.gather(scan_id)
    heights = report_data.histogram(data.heights, 2.0, start=2.0 * (min(data.heights, default=0) // 2.0))
    crowns = report_data.histogram(data.crown_diameters, 1.0, start=min(data.crown_diameters, default=0) // 1.0)
    charts = {
        "heights": svg.bar_chart(*heights, title="Tree heights", x_label="height (m), 2 m classes",
                                 y_label="trees") if data.heights else None,
        "crowns": svg.bar_chart(*crowns, title="Crown diameters", x_label="crown diameter (m), 1 m classes",
                                y_label="trees", color="#558b2f") if data.crown_diameters else None,
    }
    profiles = []
    for plot in data.plots:
        lad = (plot["metrics"] or {}).get("lad") or {}
        if lad.get("z"):
            values = [float("nan") if v is None else float(v) for v in lad["lad"]]
            profiles.append(svg.profile_chart(lad["z"], values, title=plot["name"],
                                              x_label="leaf area density (m²/m³)", y_label="height (m)"))
    base = current_app.config["CANOPY_SETTINGS"].public_url
    html = TEMPLATES.get_template("report.html").render(
        r=data, charts=charts, profiles=profiles, metric_rows=report_data.metric_rows(data.plots), base=base,
        now=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    return Response(html, mimetype="text/html")


@bp.get("/scans/<id:scan_id>/report/<kind>.png")
def quicklook(scan_id: int, kind: str):
    """The scan's current CHM (viridis) or DTM (terrain colours, hillshaded), at most 512 px."""
    if kind not in ("chm", "dtm"):
        raise NotFound(f"no quicklook {kind!r}: chm or dtm")
    _readable_scan(scan_id)
    with get_pool().connection() as conn:
        row = conn.execute("SELECT id FROM rasters WHERE scan_id = %s AND kind = %s ORDER BY "
                           "(run_id IS NOT DISTINCT FROM (SELECT current_run_id FROM scans WHERE id = %s)) DESC, "
                           "created_at DESC, id DESC LIMIT 1", (scan_id, kind, scan_id)).fetchone()
    if row is None:
        raise NotFound(f"scan {scan_id} has no {kind.upper()} yet: run forest-inventory on it")
    raster = catalog.get_raster(row[0])
    png = render_quicklook(raster.path, kind, raster.resolution_m or 1.0)
    headers = {"Cache-Control": "public, max-age=60" if raster.public else "private, max-age=60"}
    return Response(png, mimetype="image/png", headers=headers)


def render_quicklook(path: str, kind: str, resolution_m: float) -> bytes:
    """A rio-tiler preview of the raster, coloured as its map tiles are (server/tiles/render.py)."""
    from rio_tiler.io import Reader

    with Reader(path) as src:
        img = src.preview(indexes=1, max_size=QUICKLOOK_PX)
        width = src.dataset.width
    band = img.array[0]
    data, mask = np.ma.getdata(band).astype("float32"), np.ma.getmaskarray(band)
    valid = data[~mask]
    stats = {}
    if valid.size:
        stats = {"min": float(valid.min()), "max": float(valid.max()),
                 "percentile_2": float(np.percentile(valid, 2)), "percentile_98": float(np.percentile(valid, 98))}
    style = DEFAULTS[kind]
    index = to_indices(data, mask, default_rescale(kind, stats))
    shade = None
    if style.hillshade and valid.size:
        filled = np.where(mask, float(valid.mean()), data)
        cell = resolution_m * width / data.shape[1]
        shade = hillshade(np.pad(filled, 1, mode="edge"), cell)
    return encode_indexed(index, palette(style.colormap), "png", shade)
