"""/scans/{id}/runs (a scan's history of runs) and DELETE /scans/{id}.

A run is listed with its process, times, parameters, engine version, whether it is the
scan's current run (and for which products it is what the collections show by
default), its bounding box and links to its products, each of which answers with that
run's rows however many runs follow. The access policy is the scan's: whoever may read
the scan reads its runs; editors of its project delete it. Deleting a run is the OGC
dismissal of its job (DELETE /jobs/{id}, server/jobs/store.dismiss).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from urllib.parse import urlencode

from flask import Blueprint, current_app, jsonify, request

from db.pool import get_pool
from db.runs import RUN_ID

from ..auth import policy
from ..errors import BadRequest, Conflict, NotFound
from ..extents import refresh_now
from ..inputs import check_query
from ..storage import storage_of
from . import store

bp = Blueprint("runs", __name__)
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def _scan_or_404(scan_id: int, action: str) -> None:
    """The scan exists and the caller may `action` its project (else 404 like a missing one)."""
    with get_pool().connection() as conn:
        row = conn.execute("SELECT project_id FROM scans WHERE id = %s", (scan_id,)).fetchone()
    if row is None:
        raise NotFound(f"no scan {scan_id}")
    try:
        policy.require_project(row[0], action)
    except NotFound:
        raise NotFound(f"no scan {scan_id}")


def _bbox(extents: dict) -> list[float] | None:
    boxes = list(extents.values())
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def run_json(row: dict, base: str) -> dict:
    """One run as the API shows it."""
    rid, scan = row["id"], row["scan_id"]
    links = [{"rel": "self", "type": "application/json", "href": f"{base}/scans/{scan}/runs/{rid}"},
             {"rel": "collection", "type": "application/json", "href": f"{base}/scans/{scan}/runs"}]
    if row["job_status"]:
        links += [{"rel": "job", "type": "application/json", "href": f"{base}/jobs/{rid}"},
                  {"rel": "http://www.opengis.net/def/rel/ogc/1.0/results", "type": "application/json",
                   "href": f"{base}/jobs/{rid}/results"}]
    if "trees" in row["products"]:
        for name in ("trees", "crowns"):
            links.append({"rel": "item", "type": "application/geo+json", "title": name,
                          "href": f"{base}/collections/{name}/items?{urlencode({'scan_id': scan, 'run': rid})}"})
    if row["rasters"]:
        links.append({"rel": "item", "type": "application/geo+json", "title": "rasters",
                      "href": f"{base}/collections/rasters/items?{urlencode({'scan_id': scan, 'run': rid})}"})
    for raster in row["rasters"]:
        links.append({"rel": "enclosure", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                      "title": f"{raster['kind']} (raster {raster['id']})", "href": f"{base}/rasters/{raster['id']}/cog"})
    return {"id": rid, "scan_id": scan, "process": row["process_id"], "created": _iso(row["created"] or row["committed"]),
            "started": _iso(row["started"]), "committed": _iso(row["committed"]), "parameters": row["parameters"],
            "engine_version": row["engine_version"], "current": bool(row["current"]),
            "current_products": list(row["shown"]), "products": list(row["products"]), "bbox": _bbox(row["extents"]),
            "extents": row["extents"], "rasters": row["rasters"], "links": links}


def _cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    try:
        committed, rid = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return datetime.fromisoformat(committed), str(rid)
    except (ValueError, TypeError):
        raise BadRequest("cursor is not one this server made")


@bp.get("/scans/<id:scan_id>/runs")
def list_runs(scan_id: int):
    check_query({"limit", "cursor", "f"})
    try:
        limit = int(request.args.get("limit", LIMIT_DEFAULT))
    except ValueError:
        raise BadRequest("limit must be an integer")
    if not 1 <= limit <= LIMIT_MAX:
        raise BadRequest(f"limit must be between 1 and {LIMIT_MAX}")
    _scan_or_404(scan_id, policy.READ)
    with get_pool().connection() as conn:
        rows = store.page(conn, scan_id, limit, _cursor(request.args.get("cursor")))
        current = conn.execute("SELECT current_run_id FROM scans WHERE id = %s", (scan_id,)).fetchone()
    base = current_app.config["CANOPY_SETTINGS"].public_url
    more, rows = len(rows) > limit, rows[:limit]
    links = [{"rel": "self", "type": "application/json", "href": f"{base}/scans/{scan_id}/runs"},
             {"rel": "up", "type": "application/geo+json", "href": f"{base}/collections/scans/items/{scan_id}"}]
    if more:
        last = rows[-1]
        token = base64.urlsafe_b64encode(json.dumps([last["committed"].isoformat(), last["id"]]).encode())
        links.append({"rel": "next", "type": "application/json",
                      "href": f"{base}/scans/{scan_id}/runs?{urlencode({'limit': limit, 'cursor': token.decode().rstrip('=')})}"})
    return jsonify(scan_id=scan_id, current_run=current[0] if current else None,
                   runs=[run_json(r, base) for r in rows], links=links)


@bp.get("/scans/<id:scan_id>/runs/<run_id>")
def get_run(scan_id: int, run_id: str):
    _scan_or_404(scan_id, policy.READ)
    if not RUN_ID.fullmatch(run_id):
        raise NotFound(f"no run {run_id!r} of scan {scan_id}")
    with get_pool().connection() as conn:
        rows = store.page(conn, scan_id, 1, None, only=run_id)
    if not rows:
        raise NotFound(f"no run {run_id!r} of scan {scan_id}")
    return jsonify(run_json(rows[0], current_app.config["CANOPY_SETTINGS"].public_url))


@bp.delete("/scans/<id:scan_id>")
def delete_scan(scan_id: int):
    """The scan, every run of it and every file (point clouds and products); 409 while a
    job is queued or running on it (dismiss those first)."""
    _scan_or_404(scan_id, policy.WRITE)
    with get_pool().connection() as conn, conn.transaction():
        conn.execute("SELECT 1 FROM scans WHERE id = %s FOR UPDATE", (scan_id,))
        busy = store.busy_jobs(conn, scan_id)
        if busy:
            raise Conflict(f"scan {scan_id} has {len(busy)} queued or running job(s) ({', '.join(busy[:5])}): "
                           "dismiss them (DELETE /jobs/{id}) or wait for them to end")
        keys, prefixes = store.delete_scan(conn, scan_id)
    remove_files(keys, prefixes)
    return "", 204


def remove_files(keys: list[str], prefixes: list[str]) -> None:
    """After rows were deleted: their files from storage, then the collections' extents."""
    storage = storage_of(current_app.config["CANOPY_SETTINGS"])
    for key in keys:
        storage.delete(key)
    for prefix in prefixes:
        storage.delete_prefix(prefix)
    refresh_now()
