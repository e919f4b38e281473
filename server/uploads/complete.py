"""What happens when an upload's last byte arrives: the file is checked to really be
LAS/LAZ (before anything trusts it), hashed, recognised if the project already has
it, added to its scan (created if need be) and the scan's ingestion is queued.
A file that fails the checks is removed with its upload: nothing is left behind.
The upload's bytes are scratch (the workspace) until they are published: from then
on the stored file belongs to the scan (its `scan_files` row), and the upload row
keeps no reference to it, so forgetting the upload can never delete it."""

from __future__ import annotations

import hashlib
import json
import os
import re

from flask import current_app

from db.pool import get_pool
from processes.lidar.errors import LidarError
from processes.lidar.validate import inspect, require_usable

from ..jobs import store as jobs
from ..jobs.queue import enqueue
from ..storage import Storage
from ..workspace import Workspace
from .tus import TusError


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _discard(upload: dict, workspace: Workspace) -> None:
    with get_pool().connection() as conn:
        conn.execute("DELETE FROM uploads WHERE id = %s", (upload["id"],))
    workspace.upload(upload["id"]).unlink(missing_ok=True)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(name))[:100] or "scan.laz"


def _crs_of(meta: dict) -> str | None:
    """The CRS override ingestion will use for this file: the scan's when it goes to one."""
    if not meta.get("scan"):
        return meta.get("crs")
    with get_pool().connection() as conn:
        row = conn.execute("SELECT crs_override FROM scans WHERE id = %s", (int(meta["scan"]),)).fetchone()
    return row[0] if row else None


def finish(upload: dict, storage: Storage, workspace: Workspace) -> dict[str, str]:
    """Returns extra response headers (the scan, the ingestion job and the file's warnings).
    The file is published last, just before the commit: storage that cannot be written
    fails the completion with nothing recorded and the upload's bytes kept, to be
    completed again (an outage: server/errors.py)."""
    meta = upload["metadata"]
    path = workspace.upload(upload["id"])
    try:
        facts = inspect(path, crs=_crs_of(meta))
        require_usable(facts)             # what ingestion would refuse is refused now
    except LidarError as err:
        _discard(upload, workspace)
        raise TusError(422, f"{meta.get('filename', 'the file')} is not a valid LAS/LAZ file: {err}")
    digest = sha256_of(path)
    base = current_app.config["CANOPY_SETTINGS"].public_url
    with get_pool().connection() as conn, conn.transaction():
        dup = conn.execute("SELECT f.scan_id FROM scan_files f JOIN scans s ON s.id = f.scan_id "
                           "WHERE s.project_id = %s AND f.sha256 = %s LIMIT 1",
                           (upload["project_id"], digest)).fetchone()
        if dup:
            conn.execute("UPDATE uploads SET completed_at = now(), metadata = metadata || %s WHERE id = %s",
                         (json.dumps({"scan": dup[0], "duplicate": True}), upload["id"]))
            path.unlink(missing_ok=True)
            return {"Canopy-Scan": f"{base}/collections/scans/items/{dup[0]}", "Canopy-Duplicate": "true"}
        warnings = json.dumps(facts["warnings"])
        if meta.get("scan"):
            scan_id = conn.execute("UPDATE scans SET status = 'uploaded', error = NULL, warnings = "
                                   "(SELECT coalesce(jsonb_agg(DISTINCT w), '[]') FROM jsonb_array_elements("
                                   "warnings || %s::jsonb) w) WHERE id = %s RETURNING id",
                                   (warnings, int(meta["scan"]))).fetchone()[0]
        else:
            scan_id = conn.execute(
                "INSERT INTO scans (project_id, name, status, crs_override, sha256, size_bytes, warnings) "
                "VALUES (%s, %s, 'uploaded', %s, %s, %s, %s) RETURNING id",
                (upload["project_id"], meta.get("name") or meta["filename"], meta.get("crs"), digest,
                 upload["length"], warnings)).fetchone()[0]
        key = f"scans/{scan_id}/{upload['id'][:8]}-{_safe_name(meta.get('filename', 'scan.laz'))}"
        conn.execute("INSERT INTO scan_files (scan_id, storage_uri, filename, size_bytes, sha256, point_count, "
                     "bounds_native, uploaded_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                     (scan_id, key, meta.get("filename"), upload["length"], digest, facts["point_count"],
                      [float(v) for v in facts["bounds"]], upload["owner_id"]))
        conn.execute("UPDATE scans SET size_bytes = (SELECT sum(size_bytes) FROM scan_files WHERE scan_id = %s) "
                     "WHERE id = %s", (scan_id, scan_id))
        conn.execute("UPDATE uploads SET completed_at = now(), metadata = metadata || %s WHERE id = %s",
                     (json.dumps({"scan": scan_id, "sha256": digest}), upload["id"]))
        storage.publish(key, path)      # last: if the commit fails, an unreferenced object may remain
    job_id = jobs.create("ingest-scan", {"scan": scan_id}, upload["owner_id"], upload["project_id"])["id"]
    enqueue(job_id)
    return {"Canopy-Scan": f"{base}/collections/scans/items/{scan_id}", "Canopy-Job": f"{base}/jobs/{job_id}",
            "Canopy-Warnings": json.dumps(facts["warnings"])}     # JSON escapes keep the header ASCII


def purge_expired(workspace: Workspace) -> int:
    """Remove expired, unfinished uploads and their scratch bytes (run by the workers' reaper)."""
    with get_pool().connection() as conn:
        rows = conn.execute("DELETE FROM uploads WHERE completed_at IS NULL AND expires_at < now() "
                            "AND (writer IS NULL OR writer_until < now()) RETURNING id").fetchall()
    for (upload_id,) in rows:
        workspace.upload(upload_id).unlink(missing_ok=True)
    return len(rows)
