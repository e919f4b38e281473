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
from processes.lidar.validate import inspect

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


def finish(upload: dict, storage: Storage, workspace: Workspace) -> dict[str, str]:
    """Returns extra response headers (the scan and the ingestion job)."""
    meta = upload["metadata"]
    path = workspace.upload(upload["id"])
    try:
        facts = inspect(path, crs=meta.get("crs"))
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
        if meta.get("scan"):
            scan_id = conn.execute("UPDATE scans SET status = 'uploaded', error = NULL WHERE id = %s RETURNING id",
                                   (int(meta["scan"]),)).fetchone()[0]
        else:
            scan_id = conn.execute(
                "INSERT INTO scans (project_id, name, status, crs_override, sha256, size_bytes) "
                "VALUES (%s, %s, 'uploaded', %s, %s, %s) RETURNING id",
                (upload["project_id"], meta.get("name") or meta["filename"], meta.get("crs"), digest,
                 upload["length"])).fetchone()[0]
        key = f"scans/{scan_id}/{upload['id'][:8]}-{_safe_name(meta.get('filename', 'scan.laz'))}"
        storage.publish(key, path)      # if the transaction fails, an unreferenced object may remain
        conn.execute("INSERT INTO scan_files (scan_id, storage_uri, filename, size_bytes, sha256, point_count, "
                     "bounds_native, uploaded_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                     (scan_id, key, meta.get("filename"), upload["length"], digest, facts["point_count"],
                      [float(v) for v in facts["bounds"]], upload["owner_id"]))
        conn.execute("UPDATE scans SET size_bytes = (SELECT sum(size_bytes) FROM scan_files WHERE scan_id = %s) "
                     "WHERE id = %s", (scan_id, scan_id))
        conn.execute("UPDATE uploads SET completed_at = now(), metadata = metadata || %s WHERE id = %s",
                     (json.dumps({"scan": scan_id, "sha256": digest}), upload["id"]))
    job_id = jobs.create("ingest-scan", {"scan": scan_id}, upload["owner_id"], upload["project_id"])["id"]
    enqueue(job_id)
    return {"Canopy-Scan": f"{base}/collections/scans/items/{scan_id}", "Canopy-Job": f"{base}/jobs/{job_id}"}


def purge_expired(workspace: Workspace) -> int:
    """Remove expired, unfinished uploads and their scratch bytes (run by the workers' reaper)."""
    with get_pool().connection() as conn:
        rows = conn.execute("DELETE FROM uploads WHERE completed_at IS NULL AND expires_at < now() "
                            "AND (writer IS NULL OR writer_until < now()) RETURNING id").fetchall()
    for (upload_id,) in rows:
        workspace.upload(upload_id).unlink(missing_ok=True)
    return len(rows)
