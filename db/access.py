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

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def visible_projects(principal: Principal | None, column: str = "project_id") -> sql.Composable:
    """Condition on `column` (a project id) true for the projects `principal` may read:
    public ones for everybody, private ones for their members, all for admins."""
    col = sql.Identifier(column)
    if principal is not None and principal.is_admin:
        return sql.SQL("TRUE")
    public = sql.SQL("{} IN (SELECT id FROM projects WHERE visibility = 'public')").format(col)
    if principal is None:
        return public
    member = sql.SQL("{} IN (SELECT project_id FROM project_members WHERE user_id = {})").format(
        col, sql.Literal(principal.user_id))
    return sql.SQL("({} OR {})").format(public, member)


def writable_projects(principal: Principal | None, column: str = "project_id") -> sql.Composable:
    """Condition true for the projects `principal` may change: editors and owners, admins all."""
    if principal is None:
        return sql.SQL("FALSE")
    if principal.is_admin:
        return sql.SQL("TRUE")
    return sql.SQL("{} IN (SELECT project_id FROM project_members WHERE user_id = {} "
                   "AND role IN ('owner', 'editor'))").format(sql.Identifier(column),
                                                           sql.Literal(principal.user_id))
