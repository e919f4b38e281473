"""Personal access tokens: static bearer secrets for desktop clients (QGIS, GDAL).

QGIS's "API Header" authentication and GDAL's `GDAL_HTTP_HEADERS` send one fixed
header, which a 15-minute access token cannot be. A user makes a token with a name,
an expiry, a scope (one project or all of theirs) and read-only or read-write; the
secret is shown once, in the answer that creates it.

Storage: only sha256(secret). The secret is 32 bytes from `secrets` (256 bits), so
nobody can guess it and a leaked table gives nothing to brute-force: a slow password
hash (argon2) protects low-entropy human passwords and would only add ~50 ms to each
request a desktop client makes. sha256 also lets a request find its token by an
indexed equality lookup.

A token resolves to the same `Principal` as a sign-in of its user, narrowed by its
scope and read-only flag (db.access and auth.policy enforce both). Its user's role
and memberships are read at each request; a disabled user, a password change, the
expiry or a revocation void it (401). Last use is written at most once a minute.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from flask import Blueprint, g, jsonify, request

from db.access import Principal
from db.pool import get_pool

from ..errors import BadRequest, Forbidden, NotFound, Unauthorized
from . import policy

PREFIX = "canopy_pat_"
DEFAULT_DAYS = 90
MAX_DAYS = 366
_TOUCH_SECONDS = 60          # last_used_at is written at most this often per token
_SHOWN = 15                  # characters of the secret kept to recognise a token in a list

bp = Blueprint("personal_tokens", __name__)


def is_pat(token: str) -> bool:
    return token.startswith(PREFIX)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _reject(reason: str) -> Unauthorized:
    return Unauthorized(reason, headers={"WWW-Authenticate": 'Bearer realm="canopy", error="invalid_token"'})


def principal_for(token: str) -> tuple[Principal, int]:
    """(principal, token id) for a personal access token; 401 when it is unknown,
    revoked, expired, or its user is disabled or changed their password since."""
    with get_pool().connection() as conn:
        row = conn.execute(
            "SELECT t.id, t.user_id, u.role, u.active AND u.token_epoch = t.token_epoch, t.project_id, "
            "t.read_only, t.expires_at <= now(), t.revoked_at IS NOT NULL, "
            "t.last_used_at IS NULL OR t.last_used_at < now() - make_interval(secs => %s) "
            "FROM personal_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = %s",
            (_TOUCH_SECONDS, _digest(token))).fetchone()
        if row is None:
            raise _reject("unknown personal access token")
        token_id, user_id, role, valid, project_id, read_only, expired, revoked, stale = row
        if revoked:
            raise _reject("this personal access token has been revoked")
        if expired:
            raise _reject("this personal access token has expired; make a new one")
        if not valid:
            raise _reject("this token is no longer valid (user disabled or password changed)")
        if stale:   # one cheap write a minute, not one per request
            conn.execute("UPDATE personal_tokens SET last_used_at = now() WHERE id = %s", (token_id,))
    return Principal(user_id=user_id, role=role, project_scope=project_id, read_only=read_only), token_id


def _session_user() -> Principal:
    """The caller signed in with a password (or OIDC): tokens are not made or managed with
    a token, so a leaked one cannot mint a broader one or hide itself."""
    principal = policy.require_user()
    if g.get("claims", {}).get("pat"):
        raise Forbidden("personal access tokens are managed with a signed-in session, not with a token")
    return principal


def _json(row) -> dict:
    keys = ("id", "name", "prefix", "project_id", "read_only", "created_at", "expires_at", "last_used_at")
    out = dict(zip(keys, row))
    for key in ("created_at", "expires_at", "last_used_at"):
        out[key] = out[key].isoformat() if out[key] else None
    out["prefix"] += "…"
    return out


_COLS = "id, name, prefix, project_id, read_only, created_at, expires_at, last_used_at"


def _expiry(data: dict) -> datetime:
    days = data.get("expires_in_days", DEFAULT_DAYS)
    if "expires_at" in data:
        try:
            when = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest("expires_at must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z")
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        days = (when - datetime.now(timezone.utc)).total_seconds() / 86400
        if not 0 < days <= MAX_DAYS:
            raise BadRequest(f"expires_at must be in the future and at most {MAX_DAYS} days away")
        return when
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= MAX_DAYS:
        raise BadRequest(f"expires_in_days must be a number of days, more than 0 and at most {MAX_DAYS}")
    return datetime.now(timezone.utc) + timedelta(days=days)


@bp.post("/auth/tokens")
def create():
    """Make a token; the answer holds the secret, the only time it is ever shown."""
    principal = _session_user()
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("send a JSON object: {name, expires_in_days | expires_at, project, read_only}")
    unknown = sorted(set(data) - {"name", "expires_in_days", "expires_at", "project", "read_only"})
    if unknown:
        raise BadRequest(f"unknown member(s): {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 100:
        raise BadRequest("name must be 1 to 100 characters (what the token is for, e.g. 'QGIS laptop')")
    read_only = data.get("read_only", True)
    if not isinstance(read_only, bool):
        raise BadRequest("read_only must be true or false")
    project = data.get("project")
    if project is not None:
        if isinstance(project, bool) or not isinstance(project, int):
            raise BadRequest("project must be a project id (an integer), or null for every project")
        policy.require_project(project, policy.READ if read_only else policy.WRITE)
    expires = _expiry(data)
    secret = PREFIX + secrets.token_urlsafe(32)
    with get_pool().connection() as conn:
        row = conn.execute(
            f"INSERT INTO personal_tokens (user_id, name, token_hash, prefix, project_id, read_only, "
            f"token_epoch, expires_at) SELECT %s, %s, %s, %s, %s, %s, token_epoch, %s FROM users WHERE id = %s "
            f"RETURNING {_COLS}",
            (principal.user_id, name.strip(), _digest(secret), secret[:_SHOWN], project, read_only, expires,
             principal.user_id)).fetchone()
    return jsonify(**_json(row), token=secret,
                   note="copy the token now: it is not shown again"), 201


@bp.get("/auth/tokens")
def list_tokens():
    """The caller's live tokens (never their secrets)."""
    principal = _session_user()
    with get_pool().connection() as conn:
        rows = conn.execute(f"SELECT {_COLS} FROM personal_tokens WHERE user_id = %s AND revoked_at IS NULL "
                            "ORDER BY id LIMIT 1000", (principal.user_id,)).fetchall()
    return jsonify(tokens=[_json(r) for r in rows])


@bp.delete("/auth/tokens/<id:token_id>")
def revoke(token_id: int):
    """Revoke one of the caller's tokens: its next request is a 401."""
    principal = _session_user()
    with get_pool().connection() as conn:
        row = conn.execute("UPDATE personal_tokens SET revoked_at = now() WHERE id = %s AND user_id = %s "
                           "AND revoked_at IS NULL RETURNING id", (token_id, principal.user_id)).fetchone()
    if row is None:
        raise NotFound(f"no token {token_id}")
    return "", 204
