"""The tus 1.0.0 endpoints at /uploads (see tus.py for the protocol's parts).

Bytes stream straight from the request to the upload's file in fixed-size chunks
(constant memory). A PostgreSQL advisory lock per upload serialises PATCHes across
gunicorn workers and machines. Only editors of the target project may upload.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
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
from . import complete, tus
from .tus import TusError

bp = Blueprint("uploads", __name__)
CHUNK = 1 << 20


def _max_size() -> int:
    return int(os.environ.get("CANOPY_UPLOAD_MAX_BYTES", str(50 << 30)))


def _default_quota() -> int:
    return int(os.environ.get("CANOPY_UPLOAD_QUOTA_BYTES", str(200 << 30)))


def _ttl() -> timedelta:
    return timedelta(hours=float(os.environ.get("CANOPY_UPLOAD_TTL_HOURS", "24")))


def _headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": tus.VERSION, "Cache-Control": "no-store", **extra}


@bp.errorhandler(TusError)
def _tus_error(err: TusError):
    return problem(err.status, err.detail, headers=_headers(**({"Tus-Version": tus.VERSION}
                                                                if err.status == 412 else {})))


@bp.before_request
def _check_version():
    if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != tus.VERSION:
        raise TusError(412, f"send Tus-Resumable: {tus.VERSION}")


@bp.route("/uploads", methods=["OPTIONS"])
@bp.route("/uploads/<upload_id>", methods=["OPTIONS"])
def options(upload_id: str | None = None):
    return Response(status=204, headers=_headers(**{
        "Tus-Version": tus.VERSION, "Tus-Extension": tus.EXTENSIONS, "Tus-Max-Size": str(_max_size()),
        "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUMS)}))


@bp.post("/uploads")
def create():
    principal = policy.require_user()
    length = tus.parse_int(request.headers.get("Upload-Length"), "Upload-Length")
    if length > _max_size():
        raise TusError(413, f"Upload-Length {length} is over Tus-Max-Size {_max_size()}")
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
    expires = datetime.now(timezone.utc) + _ttl()
    path = storage_of(current_app.config["CANOPY_SETTINGS"]).local(f"uploads/{upload_id}.part")
    with get_pool().connection() as conn, conn.transaction():
        # quota: the bytes of this user's uploads, counted before any byte is accepted
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (principal.user_id,))
        used, quota = conn.execute(
            "SELECT coalesce(sum(u.length), 0), (SELECT quota_bytes FROM users WHERE id = %s) FROM uploads u "
            "WHERE u.owner_id = %s", (principal.user_id, principal.user_id)).fetchone()
        quota = quota if quota is not None else _default_quota()
        if used + length > quota:
            raise TusError(413, f"this upload ({length} bytes) would exceed your quota ({used} of {quota} used)")
        conn.execute("INSERT INTO uploads (id, owner_id, project_id, length, metadata, expires_at, storage_path) "
                     "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     (upload_id, principal.user_id, project_id, length,
                      json.dumps({**meta, "project": project_id, "scan": scan_id}), expires,
                      f"uploads/{upload_id}.part"))
    path.touch()
    location = f"{current_app.config['CANOPY_SETTINGS'].public_url}/uploads/{upload_id}"
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
        row = conn.execute('SELECT id, owner_id, project_id, length, "offset", metadata, expires_at, storage_path, '
                           "completed_at FROM uploads WHERE id = %s", (upload_id,)).fetchone()
    if row is None or (row[1] != principal.user_id and not principal.is_admin):
        raise TusError(404, f"no upload {upload_id}")
    upload = dict(zip(("id", "owner_id", "project_id", "length", "offset", "metadata", "expires_at",
                       "storage_path", "completed_at"), row))
    if upload["completed_at"] is None and upload["expires_at"] < datetime.now(timezone.utc):
        raise TusError(410, f"upload {upload_id} expired; start a new one")
    return upload


@bp.route("/uploads/<upload_id>", methods=["HEAD"])
def head(upload_id: str):
    with _upload_lock(upload_id, wait=5.0, required=False):
        upload = _load(upload_id)
    headers = _headers(**{"Upload-Offset": str(upload["offset"]), "Upload-Length": str(upload["length"]),
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


@contextlib.contextmanager
def _upload_lock(upload_id: str, wait: float = 0.0, required: bool = True):
    """One writer per upload, across processes and machines (a session advisory lock).
    `wait` seconds are spent waiting for a PATCH in flight (a HEAD right after a broken
    connection must see the bytes that request stored)."""
    with get_pool().connection() as conn:
        key = conn.execute("SELECT hashtextextended(%s, 0)", (upload_id,)).fetchone()[0]
        deadline = time.monotonic() + wait
        while not (locked := conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if not locked and required:
            raise TusError(423, f"upload {upload_id} is being written by another request")
        try:
            yield
        finally:
            if locked:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _receive(upload_id: str, offset: int) -> dict[str, str]:
    """Append the request body at `offset`; returns the response headers."""
    checksum = tus.parse_checksum(request.headers.get("Upload-Checksum"))
    with _upload_lock(upload_id, wait=5.0):   # a request cut off a moment ago may still be finishing
        upload = _load(upload_id)
        if upload["completed_at"] is not None:
            raise TusError(409, f"upload {upload_id} is complete")
        if offset != upload["offset"]:
            raise TusError(409, f"Upload-Offset {offset} does not match the upload's offset {upload['offset']}")
        storage = storage_of(current_app.config["CANOPY_SETTINGS"])
        path = storage.local(upload["storage_path"])     # bytes are received locally, published when complete
        room = upload["length"] - offset
        declared = request.content_length
        if declared is not None and declared > room:
            raise TusError(413, f"the body ({declared} bytes) goes past Upload-Length ({room} bytes left)")
        digest = tus.CHECKSUMS[checksum[0]]() if checksum else None
        written, broken = 0, False
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.truncate()
            try:
                while True:
                    chunk = request.stream.read(min(CHUNK, room - written + 1))
                    if not chunk:
                        break
                    if written + len(chunk) > room:
                        fh.truncate(offset)
                        raise TusError(413, "the body goes past Upload-Length")
                    fh.write(chunk)
                    if digest:
                        digest.update(chunk)
                    written += len(chunk)
            except (ClientDisconnected, OSError):    # the client's connection broke mid-body
                broken = True
            broken = broken or (declared is not None and written < declared)
            if checksum and (broken or digest.digest() != checksum[1]):
                fh.truncate(offset)          # a chunk that cannot be verified is not kept
                if broken:
                    raise TusError(400, "the connection broke before the chunk was complete")
                raise TusError(460, f"the chunk's {checksum[0]} does not match Upload-Checksum; it was discarded")
            fh.flush()
            os.fsync(fh.fileno())
        new_offset = offset + written
        expires = datetime.now(timezone.utc) + _ttl()
        with get_pool().connection() as conn:
            conn.execute('UPDATE uploads SET "offset" = %s, expires_at = %s WHERE id = %s',
                         (new_offset, expires, upload_id))
        headers = {"Upload-Offset": str(new_offset), "Upload-Expires": tus.http_date(expires)}
        if broken:
            raise TusError(400, f"the connection broke; {new_offset} bytes are stored, resume from there")
        if new_offset == upload["length"]:
            upload["offset"] = new_offset
            headers.update(complete.finish(upload, storage))
        return headers


@bp.route("/uploads/<upload_id>", methods=["DELETE"])
def terminate(upload_id: str):
    with _upload_lock(upload_id):
        upload = _load(upload_id)
        with get_pool().connection() as conn:
            conn.execute("DELETE FROM uploads WHERE id = %s", (upload_id,))
        storage_of(current_app.config["CANOPY_SETTINGS"]).local(upload["storage_path"]).unlink(missing_ok=True)
    return Response(status=204, headers=_headers())
