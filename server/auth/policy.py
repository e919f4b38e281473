"""The access policy: who may read, write and manage what. Every route uses it.

- anonymous callers read public projects only; members read their private ones;
- editors and owners write (Features Part 4, process execution, uploads);
- owners manage members; admins do everything;
- lists filter in SQL (`visible_projects` / `writable_projects` from db.access), so
  counts and paging only ever see what the caller may see;
- an object the caller may not see answers 404, exactly like a missing one;
- a personal access token narrows its user's rights: to one project (others are as
  missing, and what belongs to no project — a new project, a job of no project — is a
  403) and/or to reading (every write is a 403).
"""

from __future__ import annotations

from flask import g

from db.access import Principal, visible_projects, writable_projects
from db.pool import get_pool

from ..errors import Forbidden, NotFound, Unauthorized

__all__ = ["Principal", "visible_projects", "writable_projects", "current", "require_user",
           "require_admin", "require_unscoped", "check_token_limits", "project_role", "require_project",
           "can_read", "can_write", "can_manage"]

READ, WRITE, MANAGE = "read", "write", "manage"
_RANK = {"viewer": 1, "editor": 2, "owner": 3}
_NEEDS = {READ: 1, WRITE: 2, MANAGE: 3}


def current() -> Principal | None:
    return g.get("principal")


def require_user() -> Principal:
    principal = current()
    if principal is None:
        raise Unauthorized("sign in first: send `Authorization: Bearer <access token>`",
                           headers={"WWW-Authenticate": 'Bearer realm="canopy"'})
    return principal


def require_admin() -> Principal:
    principal = require_user()
    if not principal.is_admin:
        raise Forbidden("only administrators may do this" if principal.role != "admin"
                        else "a token scoped to one project cannot administer the server")
    return principal


def require_unscoped(action: str) -> Principal:
    """The caller, unless their token is held to one project: what belongs to no project
    (a new project, a job of no project) lies outside it (403)."""
    principal = require_user()
    if principal.project_scope is not None:
        raise Forbidden(f"this personal access token is scoped to project {principal.project_scope}: "
                        f"it cannot {action}")
    return principal


def check_token_limits(method: str, read_query: bool) -> None:
    """A read-only personal access token changes nothing, on any route: every write
    (POST, PUT, PATCH, DELETE) but a query sent as a POST body (`read_query`) is a 403.
    The SQL rules (`writable_projects`) and `require_project` refuse it too; this covers
    the routes that check no project (administration, uploads in progress)."""
    principal = current()
    if principal is not None and principal.read_only and method in ("POST", "PUT", "PATCH", "DELETE") \
            and not read_query:
        raise Forbidden("this personal access token is read-only")


def project_role(principal: Principal | None, project_id: int) -> tuple[bool, str | None, str | None]:
    """(exists, visibility, membership role) of a project for `principal`."""
    with get_pool().connection() as conn:
        row = conn.execute(
            "SELECT p.visibility, m.role FROM projects p LEFT JOIN project_members m "
            "ON m.project_id = p.id AND m.user_id = %s WHERE p.id = %s",
            (principal.user_id if principal else None, project_id)).fetchone()
    if row is None:
        return False, None, None
    return True, row[0], row[1]


def _allowed(principal: Principal | None, project_id: int, visibility: str | None, role: str | None,
             action: str) -> bool:
    if principal is not None:
        if principal.project_scope is not None and principal.project_scope != project_id:
            return False                     # a scoped token sees nothing of other projects
        if principal.read_only and action != READ:
            return False
        if principal.role == "admin":
            return True
    if action == READ and visibility == "public":
        return True
    return role is not None and _RANK[role] >= _NEEDS[action]


def require_project(project_id: int, action: str) -> None:
    """Raise unless the caller may `action` the project: 404 when they may not even see
    it (or it does not exist), 401 for anonymous writes (before looking: whether a project
    exists is not told to whom has not signed in), 403 when they see but may not act."""
    principal = require_user() if action != READ else current()
    exists, visibility, role = project_role(principal, project_id)
    if not exists or not _allowed(principal, project_id, visibility, role, READ):
        raise NotFound(f"no project {project_id}")
    if action != READ and not _allowed(principal, project_id, visibility, role, action):
        raise Forbidden(f"your role in project {project_id} does not allow {action}")


def can_read(principal: Principal | None, project_id: int) -> bool:
    exists, visibility, role = project_role(principal, project_id)
    return exists and _allowed(principal, project_id, visibility, role, READ)


def can_write(principal: Principal | None, project_id: int) -> bool:
    exists, visibility, role = project_role(principal, project_id)
    return exists and _allowed(principal, project_id, visibility, role, WRITE)


def can_manage(principal: Principal | None, project_id: int) -> bool:
    exists, visibility, role = project_role(principal, project_id)
    return exists and _allowed(principal, project_id, visibility, role, MANAGE)
