"""/auth/* (tokens), /admin/users (administrators) and /projects (projects and members)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, current_app, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from psycopg import sql

from db.pool import get_pool

from ..errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from . import policy
from .tokens import claims as token_claims, issue_tokens, revoke_session

bp = Blueprint("auth", __name__)
limiter = Limiter(get_remote_address, strategy="moving-window", headers_enabled=True, key_prefix="canopy-limits")
_hasher = PasswordHasher()
_ROLES = ("admin", "analyst", "viewer")
_MEMBER_ROLES = ("owner", "editor", "viewer")
# verifying against this keeps a login for an unknown user as slow as for a known one
_DUMMY_HASH = _hasher.hash("not a real password")


def _body(*required: str, allowed: tuple[str, ...] | None = None) -> dict:
    """The request's JSON object with the `required` members, and no member outside
    `allowed` (when given: an id, an owner or a time is the server's to set)."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("send a JSON object")
    missing = [k for k in required if k not in data]
    if missing:
        raise BadRequest(f"missing: {', '.join(missing)}")
    unknown = sorted(set(data) - set(allowed)) if allowed is not None else []
    if unknown:
        raise BadRequest(f"cannot set {', '.join(unknown)}; send only {', '.join(allowed)}")
    return data


def _password_ok(password: object) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise BadRequest("a password needs at least 8 characters")
    return password


def _user_json(row) -> dict:
    return {"id": row[0], "username": row[1], "role": row[2], "active": row[3],
            "created_at": row[4].isoformat()}


_USER_COLS = "id, username, role, active, created_at"


# -- tokens ---------------------------------------------------------------------------------

@bp.post("/auth/token")
@limiter.limit(lambda: current_app.config["CANOPY_SETTINGS"].login_rate)
def token():
    data = _body("username", "password")
    with get_pool().connection() as conn:
        row = conn.execute("SELECT id, password_hash, active, token_epoch FROM users WHERE username = %s",
                           (str(data["username"]),)).fetchone()
    try:
        _hasher.verify(row[1] if row and row[1] else _DUMMY_HASH, str(data["password"]))
        valid = row is not None and row[1] is not None and row[2]
    except (VerificationError, InvalidHashError):
        valid = False
    if not valid:
        raise Unauthorized("wrong username or password")
    tokens = issue_tokens(row[0], row[3])
    tokens["expires_in"] = current_app.config["CANOPY_SETTINGS"].access_token_seconds
    return jsonify(tokens)


@bp.post("/auth/refresh")
def refresh():
    claims = token_claims()
    if claims.get("type") != "refresh":
        raise Unauthorized("send the refresh token as `Authorization: Bearer <refresh token>`")
    access = issue_tokens(int(claims["sub"]), claims["epoch"], sid=claims["sid"])["access_token"]
    return jsonify(access_token=access, token_type="Bearer",
                   expires_in=current_app.config["CANOPY_SETTINGS"].access_token_seconds)


@bp.post("/auth/logout")
def logout():
    policy.require_user()
    sid = token_claims().get("sid")
    if sid:
        revoke_session(current_app, current_app.config["CANOPY_SETTINGS"], sid)
    return "", 204


@bp.get("/auth/me")
def me():
    principal = policy.require_user()
    with get_pool().connection() as conn:
        row = conn.execute(f"SELECT {_USER_COLS} FROM users WHERE id = %s", (principal.user_id,)).fetchone()
        projects = conn.execute("SELECT project_id, role FROM project_members WHERE user_id = %s "
                                "AND project_id = coalesce(%s, project_id) ORDER BY 1",   # a scoped token: its one
                                (principal.user_id, principal.project_scope)).fetchall()
    return jsonify(**_user_json(row), projects=[{"id": p, "role": r} for p, r in projects])


@bp.post("/auth/password")
def change_password():
    """Change one's own password; every token issued before is revoked."""
    principal = policy.require_user()
    data = _body("old_password", "new_password")
    new = _password_ok(data["new_password"])
    with get_pool().connection() as conn:
        row = conn.execute("SELECT password_hash FROM users WHERE id = %s", (principal.user_id,)).fetchone()
        try:
            _hasher.verify(row[0] or _DUMMY_HASH, str(data["old_password"]))
        except (VerificationError, InvalidHashError):
            raise Unauthorized("the old password is wrong")
        conn.execute("UPDATE users SET password_hash = %s, token_epoch = token_epoch + 1 WHERE id = %s",
                     (_hasher.hash(new), principal.user_id))
    return "", 204


# -- users (administrators) ----------------------------------------------------------------------

@bp.get("/admin/users")
def list_users():
    policy.require_admin()
    with get_pool().connection() as conn:
        rows = conn.execute(f"SELECT {_USER_COLS} FROM users ORDER BY id LIMIT 1000").fetchall()
    return jsonify(users=[_user_json(r) for r in rows])


@bp.post("/admin/users")
def create_user():
    policy.require_admin()
    data = _body("username", "password")
    role = data.get("role", "viewer")
    if role not in _ROLES:
        raise BadRequest(f"role must be one of {', '.join(_ROLES)}")
    username = data["username"].strip() if isinstance(data["username"], str) else ""
    if not username or len(username) > 100:
        raise BadRequest("username must be a string of 1 to 100 characters")
    active = data.get("active", True)
    if not isinstance(active, bool):
        raise BadRequest("active must be true or false")
    with get_pool().connection() as conn:
        row = conn.execute(f"INSERT INTO users (username, password_hash, role, active) VALUES (%s, %s, %s, %s) "
                           f"ON CONFLICT (username) DO NOTHING RETURNING {_USER_COLS}",
                           (username, _hasher.hash(_password_ok(data["password"])), role, active)).fetchone()
    if row is None:
        raise Conflict(f"user {username!r} exists")
    return jsonify(_user_json(row)), 201


def _keep_an_admin(conn, user_id: int, data: dict) -> None:
    """409 when `data` would take the last active administrator's role or active flag away:
    nobody could administer the server any more. The active administrators' rows are locked
    until the change commits, so two administrators demoting each other at once cannot both
    succeed."""
    if data.get("role", "admin") == "admin" and data.get("active", True):
        return
    admins = [r[0] for r in conn.execute("SELECT id FROM users WHERE role = 'admin' AND active "
                                         "ORDER BY id FOR UPDATE")]
    if admins == [user_id]:
        raise Conflict(f"user {user_id} is the last active administrator: make another user an "
                       "administrator before demoting or deactivating this one")


@bp.patch("/admin/users/<id:user_id>")
def update_user(user_id: int):
    """Role, active flag or password of a user; password and deactivation revoke tokens.
    The last active administrator stays one (409)."""
    policy.require_admin()
    data = _body()
    sets, args = [], []
    if "role" in data:
        if data["role"] not in _ROLES:
            raise BadRequest(f"role must be one of {', '.join(_ROLES)}")
        sets.append("role = %s"), args.append(data["role"])
    if "active" in data:
        if not isinstance(data["active"], bool):
            raise BadRequest("active must be true or false")
        sets.append("active = %s"), args.append(data["active"])
    if "password" in data:
        sets.append("password_hash = %s"), args.append(_hasher.hash(_password_ok(data["password"])))
    if not sets:
        raise BadRequest("nothing to change: role, active or password")
    if "password" in data or data.get("active") is False:
        sets.append("token_epoch = token_epoch + 1")
    with get_pool().connection() as conn, conn.transaction():
        _keep_an_admin(conn, user_id, data)
        row = conn.execute(f"UPDATE users SET {', '.join(sets)} WHERE id = %s RETURNING {_USER_COLS}",
                           (*args, user_id)).fetchone()
    if row is None:
        raise NotFound(f"no user {user_id}")
    return jsonify(_user_json(row))


# -- projects and members ----------------------------------------------------------------------

def _project_json(row) -> dict:
    return {"id": row[0], "name": row[1], "visibility": row[2], "created_by": row[3],
            "created_at": row[4].isoformat()}


_PROJECT_COLS = "id, name, visibility, created_by, created_at"
_PROJECT_FIELDS = ("name", "visibility")     # what a client sets; id, created_by and created_at are ours


@bp.get("/projects")
def list_projects():
    where = policy.visible_projects(policy.current(), column="id")
    query = sql.SQL(f"SELECT {_PROJECT_COLS} FROM projects WHERE {{}} ORDER BY id LIMIT 1000").format(where)
    with get_pool().connection() as conn:
        rows = conn.execute(query).fetchall()
    return jsonify(projects=[_project_json(r) for r in rows])


def _project_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("a project's name is a non-empty string")
    return name


@bp.post("/projects")
def create_project():
    principal = policy.require_unscoped("create projects")
    if principal.role not in ("admin", "analyst"):
        raise Forbidden("only analysts and administrators create projects")
    data = _body("name", allowed=_PROJECT_FIELDS)
    _project_name(data["name"])
    visibility = data.get("visibility", "private")
    if visibility not in ("public", "private"):
        raise BadRequest("visibility must be public or private")
    with get_pool().connection() as conn, conn.transaction():
        row = conn.execute(f"INSERT INTO projects (name, visibility, created_by) VALUES (%s, %s, %s) "
                           f"RETURNING {_PROJECT_COLS}", (data["name"], visibility,
                                                          principal.user_id)).fetchone()
        conn.execute("INSERT INTO project_members (project_id, user_id, role) VALUES (%s, %s, 'owner')",
                     (row[0], principal.user_id))
    return jsonify(_project_json(row)), 201


@bp.get("/projects/<id:project_id>")
def get_project(project_id: int):
    policy.require_project(project_id, policy.READ)
    with get_pool().connection() as conn:
        row = conn.execute(f"SELECT {_PROJECT_COLS} FROM projects WHERE id = %s", (project_id,)).fetchone()
    if row is None:                      # deleted since require_project looked
        raise NotFound(f"no project {project_id}")
    return jsonify(_project_json(row))


@bp.patch("/projects/<id:project_id>")
def update_project(project_id: int):
    policy.require_project(project_id, policy.MANAGE)
    data = _body(allowed=_PROJECT_FIELDS)
    if "visibility" in data and data["visibility"] not in ("public", "private"):
        raise BadRequest("visibility must be public or private")
    if "name" in data:
        _project_name(data["name"])
    with get_pool().connection() as conn:
        row = conn.execute(f"UPDATE projects SET name = coalesce(%s, name), visibility = coalesce(%s, visibility) "
                           f"WHERE id = %s RETURNING {_PROJECT_COLS}",
                           (data.get("name"), data.get("visibility"), project_id)).fetchone()
    if row is None:                      # deleted since require_project looked (a concurrent DELETE)
        raise NotFound(f"no project {project_id}")
    return jsonify(_project_json(row))


@bp.delete("/projects/<id:project_id>")
def delete_project(project_id: int):
    policy.require_project(project_id, policy.MANAGE)
    from ..runs.store import project_files
    from ..runs.views import remove_files
    with get_pool().connection() as conn, conn.transaction():
        keys, prefixes = project_files(conn, project_id)     # its scans' files and every run's products
        conn.execute("DELETE FROM projects WHERE id = %s", (project_id,))
    remove_files(keys, prefixes)
    return "", 204


@bp.get("/projects/<id:project_id>/members")
def list_members(project_id: int):
    policy.require_project(project_id, policy.READ)
    with get_pool().connection() as conn:
        rows = conn.execute("SELECT u.id, u.username, m.role FROM project_members m JOIN users u "
                            "ON u.id = m.user_id WHERE m.project_id = %s ORDER BY u.id", (project_id,)).fetchall()
    return jsonify(members=[{"user_id": r[0], "username": r[1], "role": r[2]} for r in rows])


@bp.put("/projects/<id:project_id>/members/<id:user_id>")
def put_member(project_id: int, user_id: int):
    policy.require_project(project_id, policy.MANAGE)
    role = _body("role")["role"]
    if role not in _MEMBER_ROLES:
        raise BadRequest(f"role must be one of {', '.join(_MEMBER_ROLES)}")
    with get_pool().connection() as conn:
        if not conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,)).fetchone():
            raise NotFound(f"no user {user_id}")
        conn.execute("INSERT INTO project_members (project_id, user_id, role) VALUES (%s, %s, %s) "
                     "ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role",
                     (project_id, user_id, role))
    return jsonify(project_id=project_id, user_id=user_id, role=role)


@bp.delete("/projects/<id:project_id>/members/<id:user_id>")
def delete_member(project_id: int, user_id: int):
    policy.require_project(project_id, policy.MANAGE)
    with get_pool().connection() as conn:
        conn.execute("DELETE FROM project_members WHERE project_id = %s AND user_id = %s", (project_id, user_id))
    return "", 204
