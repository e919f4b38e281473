"""The access policy: who may read, write and manage what. Every route uses it.

- anonymous callers read public projects only; members read their private ones;
- editors and owners write (Features Part 4, process execution, uploads);
- owners manage members; admins do everything;
- lists filter in SQL (`visible_projects` / `writable_projects` from db.access), so
  counts and paging only ever see what the caller may see;
- an object the caller may not see answers 404, exactly like a missing one.
"""

from __future__ import annotations

from flask import g

from db.access import Principal, visible_projects, writable_projects
from db.pool import get_pool

from ..errors import Forbidden, NotFound, Unauthorized

__all__ = ["Principal", "visible_projects", "writable_projects", "current", "require_user",
           "require_admin", "project_role", "require_project", "can_read", "can_write", "can_manage"]

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
        raise Forbidden("only administrators may do this")
    return principal


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


def _allowed(principal: Principal | None, visibility: str | None, role: str | None, action: str) -> bool:
    if principal is not None and principal.is_admin:
        return True
    if action == READ and visibility == "public":
        return True
    return role is not None and _RANK[role] >= _NEEDS[action]


def require_project(project_id: int, action: str) -> None:
    """Raise unless the caller may `action` the project: 404 when they may not even see
    it (or it does not exist), 401 for anonymous writes, 403 when they see but may not act."""
    principal = current()
    exists, visibility, role = project_role(principal, project_id)
    if not exists or not _allowed(principal, visibility, role, READ):
        raise NotFound(f"no project {project_id}")
    if action != READ:
        require_user()
        if not _allowed(principal, visibility, role, action):
            raise Forbidden(f"your role in project {project_id} does not allow {action}")


def can_read(principal: Principal | None, project_id: int) -> bool:
    exists, visibility, role = project_role(principal, project_id)
    return exists and _allowed(principal, visibility, role, READ)


def can_write(principal: Principal | None, project_id: int) -> bool:
    exists, visibility, role = project_role(principal, project_id)
    return exists and _allowed(principal, visibility, role, WRITE)


def can_manage(principal: Principal | None, project_id: int) -> bool:
    exists, visibility, role = project_role(principal, project_id)
    return exists and _allowed(principal, visibility, role, MANAGE)
