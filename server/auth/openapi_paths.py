"""OpenAPI descriptions of /auth/*, /admin/users and /projects (merged by server.openapi)."""

from __future__ import annotations

from ..inputs import NAME_PATTERN, ROW_ID

_OBJ = {"type": "object", "additionalProperties": True}
_PROBLEM = {"$ref": "#/components/responses/Problem"}
_BEARER = [{"bearerAuth": []}]


def _op(summary: str, op_id: str, ok: str = "200", body: dict | None = None, params: list | None = None,
        secure: bool = True, errors: tuple = ("400", "401", "403", "404")) -> dict:
    op = {"summary": summary, "operationId": op_id, "tags": ["auth"],
          "responses": {ok: {"description": "OK", **({"content": {"application/json": {"schema": _OBJ}}}
                                                     if ok != "204" else {})},
                        **{code: _PROBLEM for code in errors}}}
    if secure:
        op["security"] = _BEARER
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _int_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": ROW_ID}


_CREDENTIALS = {"type": "object", "required": ["username", "password"],
                "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}
NEW_PASSWORD = {"type": "string", "minLength": 8, "description": "at least 8 characters"}   # views._password_ok
_NAME = {"type": "string", "maxLength": 100, "pattern": NAME_PATTERN}     # not blank: views.py, pat.py
_USER = {"type": "object", "properties": {"username": _NAME,
                                          "password": NEW_PASSWORD,
                                          "role": {"type": "string", "enum": ["admin", "analyst", "viewer"]},
                                          "active": {"type": "boolean"}}}
_PROJECT = {"type": "object", "additionalProperties": False,      # id, created_by, created_at: 400 (views.py)
            "properties": {"name": {"type": "string", "pattern": NAME_PATTERN},
                           "visibility": {"type": "string", "enum": ["public", "private"]}}}
_MEMBER = {"type": "object", "required": ["role"],
           "properties": {"role": {"type": "string", "enum": ["owner", "editor", "viewer"]}}}
_PID, _UID = _int_param("projectId"), _int_param("userId")
_NEW_TOKEN = {"type": "object", "required": ["name"], "properties": {
    "name": {**_NAME, "description": "what the token is for, e.g. 'QGIS laptop'"},
    "expires_in_days": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 366, "default": 90},
    "expires_at": {"type": "string", "format": "date-time", "description": "instead of expires_in_days"},
    "project": {"type": "integer", "nullable": True, "description": "the one project it reaches; null: all"},
    "read_only": {"type": "boolean", "default": True}}}

PATHS = {
    "/auth/token": {"post": _op("Sign in: username and password for access and refresh tokens", "signIn",
                                body=_CREDENTIALS, secure=False, errors=("400", "401", "429"))},
    "/auth/refresh": {"post": _op("A new access token for a refresh token (sent as the bearer)", "refresh",
                                  errors=("401",))},
    "/auth/logout": {"post": _op("Revoke the access and refresh token of this sign-in", "signOut",
                                 ok="204", errors=("401",))},
    "/auth/me": {"get": _op("The signed-in user and their project roles", "me", errors=("401",))},
    "/auth/password": {"post": _op("Change one's password (revokes every earlier token)", "changePassword",
                                   ok="204", body={"type": "object", "required": ["old_password", "new_password"],
                                                   "properties": {"old_password": {"type": "string"},
                                                                  "new_password": NEW_PASSWORD}})},
    "/auth/tokens": {
        "get": _op("The caller's personal access tokens (never their secrets)", "listTokens", errors=("401", "403")),
        "post": _op("Make a personal access token for a desktop client (QGIS, GDAL: `Authorization: Bearer "
                    "<token>`); the answer's `token` is the secret, shown only this once", "createToken",
                    ok="201", body=_NEW_TOKEN, errors=("400", "401", "403", "404"))},
    "/auth/tokens/{tokenId}": {"delete": _op("Revoke a personal access token", "revokeToken", ok="204",
                                             params=[_int_param("tokenId")], errors=("401", "403", "404"))},
    "/admin/users": {"get": _op("List users (administrators)", "listUsers"),
                     "post": _op("Create a user (administrators)", "createUser", ok="201",
                                 body={**_USER, "required": ["username", "password"]},
                                 errors=("400", "401", "403", "409"))},
    "/admin/users/{userId}": {"patch": _op("Change a user's role, active flag or password (administrators)",
                                           "updateUser", body=_USER, params=[_UID])},
    "/projects": {"get": {**_op("Projects the caller may see", "listProjects", errors=("401",)),
                          "security": [{}, {"bearerAuth": []}]},
                  "post": _op("Create a project (analysts, administrators); the creator owns it",
                              "createProject", ok="201", body={**_PROJECT, "required": ["name"]})},
    "/projects/{projectId}": {
        "get": {**_op("A project", "getProject", params=[_PID]), "security": [{}, {"bearerAuth": []}]},
        "patch": _op("Rename a project or change its visibility (owners)", "updateProject", body=_PROJECT,
                     params=[_PID]),
        "delete": _op("Delete a project and everything in it (owners)", "deleteProject", ok="204",
                      params=[_PID])},
    "/projects/{projectId}/members": {
        "get": {**_op("Members of a project", "listMembers", params=[_PID]), "security": [{}, {"bearerAuth": []}]}},
    "/projects/{projectId}/members/{userId}": {
        "put": _op("Add a member or change their role (owners)", "putMember", body=_MEMBER, params=[_PID, _UID]),
        "delete": _op("Remove a member (owners)", "deleteMember", ok="204", params=[_PID, _UID])},
}
