"""The tus 1.0.0 endpoints at /uploads (see tus.py for the protocol's parts).

Bytes stream straight from the request to the upload's scratch file in the workspace
in fixed-size chunks (constant memory). A lease on the upload's row (lease.py)
serialises writers across gunicorn workers and machines without holding a database
connection while the body arrives. Only editors of the target project may upload.
Once complete, the file belongs to its scan: terminating the upload then only
forgets the upload.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta, timezone

from flask import Blueprint, Response, current_app, request
from pyproj import CRS
from pyproj.exceptions import CRSError
from werkzeug.exceptions import ClientDisconnected

from db.pool import get_pool

from ..auth import policy
from ..errors import NotFound, problem
from ..storage import storage_of
from ..workspace import workspace_of
from . import complete, lease, tus
from .tus import TusError

bp = Blueprint("uploads", __name__)
CHUNK = 1 << 20


def _headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": tus.VERSION, "Cache-Control": "no-store", **extra}


@bp.errorhandler(TusError)
def _tus_error(err: TusError):
    return problem(err.status, err.detail, headers=_headers(**({"Tus-Version": tus.VERSION}
                                                                if err.status == 412 else {})))


@bp.after_request
def _tus_headers(response):
    # every answer, those of the app's own error handlers too (a 503 when storage is away)
    response.headers.setdefault("Tus-Resumable", tus.VERSION)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.before_request
def _check_version():
    if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != tus.VERSION:
        raise TusError(412, f"send Tus-Resumable: {tus.VERSION}")


@bp.route("/uploads", methods=["OPTIONS"])
@bp.route("/uploads/<upload_id>", methods=["OPTIONS"])
def options(upload_id: str | None = None):
    max_size = current_app.config["CANOPY_SETTINGS"].upload_max_bytes
    return Response(status=204, headers=_headers(**{
        "Tus-Version": tus.VERSION, "Tus-Extension": tus.EXTENSIONS, "Tus-Max-Size": str(max_size),
        "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUMS)}))


@bp.post("/uploads")
def create():
    principal = policy.require_user()
    settings = current_app.config["CANOPY_SETTINGS"]
    length = tus.parse_int(request.headers.get("Upload-Length"), "Upload-Length")
    if length > settings.upload_max_bytes:
        raise TusError(413, f"Upload-Length {length} is over Tus-Max-Size {settings.upload_max_bytes}")
    if length == 0:
        raise TusError(400, "an empty file is not a point cloud")
    meta = tus.parse_metadata(request.headers.get("Upload-Metadata"))
    project_id, scan_id = _target(meta)
    if "crs" in meta:
        try:
            CRS.from_user_input(meta["crs"])
        except CRSError:
            raise TusError(400, f"crs {meta['crs']!r} is not a CRS PROJ knows (try EPSG:2992)")
    meta.setdefault("filename", "upload.laz")
    upload_id = uuid.uuid4().hex
    expires = datetime.now(timezone.utc) + timedelta(hours=settings.upload_ttl_hours)
    path = workspace_of(settings).upload(upload_id)
    with get_pool().connection() as conn, conn.transaction():
        # quota: the bytes this user holds now (unfinished uploads and the files of the scans
        # they uploaded), counted before any byte is accepted
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (principal.user_id,))
        used, quota = conn.execute(
            "SELECT (SELECT coalesce(sum(length), 0) FROM uploads WHERE owner_id = %(u)s AND completed_at IS NULL)"
            " + (SELECT coalesce(sum(size_bytes), 0) FROM scan_files WHERE uploaded_by = %(u)s),"
            " (SELECT quota_bytes FROM users WHERE id = %(u)s)", {"u": principal.user_id}).fetchone()
        quota = quota if quota is not None else settings.upload_quota_bytes
        if used + length > quota:
            raise TusError(413, f"this upload ({length} bytes) would exceed your quota ({used} of {quota} used)")
        conn.execute("INSERT INTO uploads (id, owner_id, project_id, length, metadata, expires_at) "
                     "VALUES (%s, %s, %s, %s, %s, %s)",
                     (upload_id, principal.user_id, project_id, length,
                      json.dumps({**meta, "project": project_id, "scan": scan_id}), expires))
    path.touch()
    location = f"{settings.public_url}/uploads/{upload_id}"
    headers = _headers(Location=location, **{"Upload-Expires": tus.http_date(expires), "Upload-Offset": "0"})
    if request.content_length and request.mimetype == "application/offset+octet-stream":
        extra = _receive(upload_id, 0)                  # creation-with-upload
        headers.update(extra)
    return Response(status=201, headers=headers)


def _target(meta: dict[str, str]) -> tuple[int, int | None]:
    """The project (and scan) an upload goes to; the caller must be able to write it."""
    scan_id = None
    if "scan" in meta:
        try:
            scan_id = int(meta["scan"])
        except ValueError:
            raise TusError(400, "metadata scan must be a scan id")
        with get_pool().connection() as conn:
            row = conn.execute("SELECT project_id FROM scans WHERE id = %s", (scan_id,)).fetchone()
        if row is None:
            raise TusError(404, f"no scan {scan_id}")
        project_id = row[0]
        if "project" in meta and meta["project"] != str(project_id):
            raise TusError(400, f"scan {scan_id} belongs to project {project_id}, not {meta['project']}")
    else:
        try:
            project_id = int(meta["project"])
        except (KeyError, ValueError):
            raise TusError(400, "Upload-Metadata must name the project (its id) or an existing scan")
        if not meta.get("name") and not meta.get("filename"):
            raise TusError(400, "Upload-Metadata must give the scan a name (or a filename)")
    try:
        policy.require_project(project_id, policy.WRITE)
    except NotFound:
        raise TusError(404, f"no project {project_id}" if scan_id is None else f"no scan {scan_id}")
    return project_id, scan_id


def _load(upload_id: str) -> dict:
    principal = policy.require_user()
    with get_pool().connection() as conn:
        row = conn.execute('SELECT id, owner_id, project_id, length, "offset", metadata, expires_at, completed_at '
                           "FROM uploads WHERE id = %s", (upload_id,)).fetchone()
    if row is None or (row[1] != principal.user_id and not principal.is_admin):
        raise TusError(404, f"no upload {upload_id}")
    upload = dict(zip(("id", "owner_id", "project_id", "length", "offset", "metadata", "expires_at",
                       "completed_at"), row))
    if upload["completed_at"] is None and upload["expires_at"] < datetime.now(timezone.utc):
        raise TusError(410, f"upload {upload_id} expired; start a new one")
    return upload


def _announced(upload: dict) -> int:
    """The offset a client is told (HEAD): the bytes stored, but the last one only once the
    upload is complete. An upload whose completion failed (storage unavailable) thus stays
    resumable: a tus client resends its last byte and that PATCH completes it. An empty
    PATCH at the stored offset completes it too."""
    if upload["completed_at"] is None and upload["offset"] == upload["length"]:
        return upload["length"] - 1
    return upload["offset"]


@bp.route("/uploads/<upload_id>", methods=["HEAD"])
def head(upload_id: str):
    _load(upload_id)                         # 404/410 before waiting on anything
    lease.wait_free(upload_id, wait=5.0)     # a PATCH cut off a moment ago may still be storing its bytes
    upload = _load(upload_id)
    headers = _headers(**{"Upload-Offset": str(_announced(upload)), "Upload-Length": str(upload["length"]),
                          "Upload-Metadata": tus.encode_metadata(
                              {k: str(v) for k, v in upload["metadata"].items() if v is not None})})
    if upload["completed_at"] is None:
        headers["Upload-Expires"] = tus.http_date(upload["expires_at"])
    return Response(status=200, headers=headers)


@bp.route("/uploads/<upload_id>", methods=["PATCH"])
def patch(upload_id: str):
    if request.mimetype != "application/offset+octet-stream":
        raise TusError(415, "PATCH needs Content-Type: application/offset+octet-stream")
    offset = tus.parse_int(request.headers.get("Upload-Offset"), "Upload-Offset")
    return Response(status=204, headers=_headers(**_receive(upload_id, offset)))


def _receive(upload_id: str, offset: int) -> dict[str, str]:
    """Append the request body at `offset`; returns the response headers. No database
    connection is held while the body is read (see lease.py)."""
    checksum = tus.parse_checksum(request.headers.get("Upload-Checksum"))
    _load(upload_id)                                  # 404/410 for strangers, before taking the lease
    with lease.hold(upload_id, wait=5.0) as held:     # a request cut off a moment ago may still be finishing
        upload = _load(upload_id)                     # the offset as the last writer left it
        if upload["completed_at"] is not None:
            raise TusError(409, f"upload {upload_id} is complete")
        if offset not in (upload["offset"], _announced(upload)):
            raise TusError(409, f"Upload-Offset {offset} does not match the upload's offset {_announced(upload)}")
        settings = current_app.config["CANOPY_SETTINGS"]
        path = workspace_of(settings).upload(upload_id)   # scratch: published to storage when complete
        room = upload["length"] - offset
        declared = request.content_length
        if declared is not None and declared > room:
            raise TusError(413, f"the body ({declared} bytes) goes past Upload-Length ({room} bytes left)")
        written, broken = _write_body(path, offset, room, checksum, held)
        new_offset = offset + written
        expires = datetime.now(timezone.utc) + timedelta(hours=settings.upload_ttl_hours)
        done = not broken and new_offset == upload["length"]
        held.record(new_offset, expires, release=not done)  # completion keeps the lease until it is over
        headers = {"Upload-Offset": str(new_offset), "Upload-Expires": tus.http_date(expires)}
        if broken:
            raise TusError(400, f"the connection broke; {new_offset} bytes are stored, resume from there")
        if done:
            upload["offset"] = new_offset
            headers.update(complete.finish(upload, storage_of(settings), workspace_of(settings)))
        return headers


def _write_body(path, offset: int, room: int, checksum, held: lease.Lease) -> tuple[int, bool]:
    """Write the request body at `offset` (at most `room` bytes), verifying the checksum;
    returns (bytes written, whether the connection broke). A chunk that cannot be
    verified is not kept."""
    declared = request.content_length
    digest = tus.CHECKSUMS[checksum[0]]() if checksum else None
    written, broken = 0, False
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.truncate()
        while True:
            try:
                chunk = request.stream.read(min(CHUNK, room - written + 1))
            except (ClientDisconnected, OSError):    # the client's connection broke mid-body
                broken = True
                break
            if not chunk:
                break
            if written + len(chunk) > room:
                fh.truncate(offset)
                raise TusError(413, "the body goes past Upload-Length")
            held.keep()
            fh.write(chunk)          # a full or failing scratch disk: an outage (503), nothing recorded
            if digest:
                digest.update(chunk)
            written += len(chunk)
        broken = broken or (declared is not None and written < declared)
        if checksum and (broken or digest.digest() != checksum[1]):
            fh.truncate(offset)
            if broken:
                raise TusError(400, "the connection broke before the chunk was complete")
            raise TusError(460, f"the chunk's {checksum[0]} does not match Upload-Checksum; it was discarded")
        fh.flush()
        os.fsync(fh.fileno())
    return written, broken


@bp.route("/uploads/<upload_id>", methods=["DELETE"])
def terminate(upload_id: str):
    """tus termination: the upload is forgotten and its scratch bytes freed. A completed
    upload's file belongs to its scan (scan_files) and stays: only deleting the scan
    deletes it."""
    _load(upload_id)
    with lease.hold(upload_id):
        with get_pool().connection() as conn:
            conn.execute("DELETE FROM uploads WHERE id = %s", (upload_id,))
        workspace_of(current_app.config["CANOPY_SETTINGS"]).upload(upload_id).unlink(missing_ok=True)
    return Response(status=204, headers=_headers())
