"""Who may see what, as SQL: the one visibility rule every list and lookup applies.

It lives beside the schema so that the providers (pygeoapi plugins) and the web
server share it without depending on each other. Lists filter in SQL, so counts,
paging and links only ever see rows the caller may see.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class Principal:
    """Who is calling; None stands for an anonymous caller."""

    user_id: int
    role: str = "viewer"   # global role: admin | analyst | viewer
    project_scope: int | None = None   # a personal access token limited to this one project
    read_only: bool = False            # a personal access token that may change nothing

    @property
    def is_admin(self) -> bool:
        """Administers everything: an admin not held to one project by their token."""
        return self.role == "admin" and self.project_scope is None


def _scoped(principal: Principal, rule: sql.Composable, col: sql.Identifier) -> sql.Composable:
    """`rule`, narrowed to the token's one project when the caller's token is scoped."""
    if principal.project_scope is None:
        return rule
    return sql.SQL("({} = {} AND {})").format(col, sql.Literal(principal.project_scope), rule)


def visible_projects(principal: Principal | None, column: str = "project_id") -> sql.Composable:
    """Condition on `column` (a project id) true for the projects `principal` may read:
    public ones for everybody, private ones for their members, all for admins; through a
    project-scoped personal access token, only that project (if they may read it)."""
    col = sql.Identifier(column)
    if principal is not None and principal.role == "admin":
        return _scoped(principal, sql.SQL("TRUE"), col)
    public = sql.SQL("{} IN (SELECT id FROM projects WHERE visibility = 'public')").format(col)
    if principal is None:
        return public
    member = sql.SQL("{} IN (SELECT project_id FROM project_members WHERE user_id = {})").format(
        col, sql.Literal(principal.user_id))
    return _scoped(principal, sql.SQL("({} OR {})").format(public, member), col)


def writable_projects(principal: Principal | None, column: str = "project_id") -> sql.Composable:
    """Condition true for the projects `principal` may change: editors and owners, admins all;
    none through a read-only token, only its project through a scoped one."""
    if principal is None or principal.read_only:
        return sql.SQL("FALSE")
    col = sql.Identifier(column)
    if principal.role == "admin":
        return _scoped(principal, sql.SQL("TRUE"), col)
    return _scoped(principal, sql.SQL("{} IN (SELECT project_id FROM project_members WHERE user_id = {} "
                                      "AND role IN ('owner', 'editor'))").format(col, sql.Literal(principal.user_id)),
                   col)
