"""OpenAPI descriptions of the tus endpoints at /uploads (merged by server.openapi)."""

from __future__ import annotations

from . import tus

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_BEARER = [{"bearerAuth": []}]


def _header(name: str, description: str, required: bool = True) -> dict:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": {"type": "string"}}


def _said(description: str) -> dict:
    return {"description": description, "schema": {"type": "string"}}


_VERSION = _header("Tus-Resumable", f"the tus version: {tus.VERSION}")
_ID = {"name": "uploadId", "in": "path", "required": True, "schema": {"type": "string"}}
_OFFSET = {"Upload-Offset": _said("bytes received (one short of Upload-Length until the upload completed)")}
_COMPLETION = {
    "Canopy-Scan": _said("when complete: the scan the file went to"),
    "Canopy-Job": _said("when complete: the ingest-scan job"),
    "Canopy-Duplicate": _said("when complete: `true` if the project already had the same bytes"),
    "Canopy-Warnings": _said("when complete: a JSON array of what is suspect in the file (`[]` when nothing)")}
_ERRORS = {code: _PROBLEM for code in ("400", "401", "404", "409", "412", "413", "415", "422", "423")}
_UNAVAILABLE = {"503": {**_PROBLEM, "description": "storage cannot be written now: retry after Retry-After; "
                                                   "the upload stays resumable"}}
_BYTES = {"content": {"application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


def _op(summary: str, op_id: str, ok: str, params: list, headers: dict | None = None, body: bool = False) -> dict:
    op = {"summary": summary, "operationId": op_id, "tags": ["uploads"], "security": _BEARER,
          "parameters": [_VERSION, *params],
          "responses": {ok: {"description": "OK", "headers": headers or {}}, **_ERRORS, **_UNAVAILABLE}}
    if body:
        op["requestBody"] = {"required": False, **_BYTES}
    return op


PATHS = {
    "/uploads": {"post": _op(
        "Create a resumable upload (tus creation, creation-with-upload)", "createUpload", "201",
        [_header("Upload-Length", "the file's size in bytes"),
         _header("Upload-Metadata", "filename, project, name, crs, scan: base64 values", required=False)],
        {"Location": _said("the upload's URL"), **_OFFSET, **_COMPLETION}, body=True)},
    "/uploads/{uploadId}": {
        "head": _op("The upload's offset (where to resume)", "uploadOffset", "200", [_ID],
                    {**_OFFSET, "Upload-Length": _said("the file's size")}),
        "patch": _op("Append bytes at Upload-Offset; the last ones complete the upload", "appendUpload", "204",
                     [_ID, _header("Upload-Offset", "where these bytes go"),
                      _header("Upload-Checksum", "algorithm and base64 digest of these bytes", required=False)],
                     {**_OFFSET, **_COMPLETION}, body=True),
        "delete": _op("Terminate the upload (a completed upload's file stays with its scan)", "terminateUpload",
                      "204", [_ID])},
}
