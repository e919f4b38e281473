"""OpenAPI path items of /scans/{scanId}/runs and DELETE /scans/{scanId} (merged into the
server's document by `server.openapi`), and the `run` parameter of the items of trees,
crowns and rasters."""

from __future__ import annotations

from ..inputs import ROW_ID

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_SCAN = {"name": "scanId", "in": "path", "required": True, "description": "identifier of a scan",
         "schema": ROW_ID}
_RUN = {"type": "object", "properties": {
    "id": {"type": "string", "description": "the run's id: its (top-level) job's id"},
    "scan_id": {"type": "integer"}, "process": {"type": "string"},
    "created": {"type": "string", "format": "date-time", "description": "when the job was created"},
    "committed": {"type": "string", "format": "date-time", "description": "when its products were committed"},
    "parameters": {"type": "object", "description": "the job's inputs"},
    "engine_version": {"type": "string"},
    "current": {"type": "boolean", "description": "the scan's current (latest) run"},
    "current_products": {"type": "array", "items": {"type": "string"},
                         "description": "products the collections show from this run by default"},
    "products": {"type": "array", "items": {"type": "string"}},
    "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4, "nullable": True},
    "extents": {"type": "object", "description": "bbox per collection (CRS84)"},
    "rasters": {"type": "array", "items": {"type": "object"}},
    "links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}}}}
_RUNS = {"type": "object", "properties": {
    "scan_id": {"type": "integer"}, "current_run": {"type": "string", "nullable": True},
    "runs": {"type": "array", "items": _RUN}, "links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}}}}

RUN_PARAMETER = {
    "name": "run", "in": "query", "required": False, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    "description": "The rows of one run (a job id, as in the job's results links) or of every run (`all`). "
                   "Without it each scan shows, per product, its latest run."}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PATHS: dict[str, dict] = {
    "/scans/{scanId}/runs": {"get": {
        "operationId": "getScanRuns", "summary": "A scan's runs, newest first: parameters, engine version, "
                                                 "current flag, bbox and links to each run's products",
        "tags": ["runs"], "parameters": [
            _SCAN, {"name": "limit", "in": "query", "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "follow the `next` link"}],
        "responses": {"200": _json("the runs", _RUNS), "400": _PROBLEM, "404": _PROBLEM}}},
    "/scans/{scanId}/runs/{runId}": {"get": {
        "operationId": "getScanRun", "summary": "One run of a scan", "tags": ["runs"],
        "parameters": [_SCAN, {"name": "runId", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _json("the run", _RUN), "404": _PROBLEM}}},
    "/scans/{scanId}": {"delete": {
        "operationId": "deleteScan", "summary": "Delete a scan with every run and file of it (editors); 409 while "
                                                "a job runs on it. A single run goes with DELETE /jobs/{jobId}.",
        "tags": ["runs"], "parameters": [_SCAN],
        "responses": {"204": {"description": "deleted"}, "401": _PROBLEM, "403": _PROBLEM, "404": _PROBLEM,
                      "409": _PROBLEM}}},
}
