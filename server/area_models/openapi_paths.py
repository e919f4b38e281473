"""OpenAPI path items of /area-models (merged into the server's document by `server.openapi`)."""

from __future__ import annotations

from ..inputs import ROW_ID

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_LINKS = {"type": "array", "items": {"$ref": "#/components/schemas/link"}}
_VALIDATION = {"type": "object", "description": "cross-validation of the fitting procedure", "properties": {
    "scheme": {"type": "string", "description": "k-fold (`10-fold`) or leave-one-out (`loo`)"},
    "rmse": {"type": "number"}, "rmse_pct": {"type": "number", "description": "RMSE / mean observed × 100"},
    "bias": {"type": "number", "description": "mean of predicted − observed"}, "bias_pct": {"type": "number"},
    "r2": {"type": "number"}, "baseline_rmse": {"type": "number", "description": "RMSE of predicting the mean"},
    "baseline_rmse_pct": {"type": "number"},
    "observed": {"type": "array", "items": {"type": "number"}},
    "predicted": {"type": "array", "items": {"type": "number"}, "description": "held-out predictions"}}}
_MODEL = {"type": "object", "properties": {
    "id": {"type": "integer"}, "project_id": {"type": "integer"}, "scan_id": {"type": "integer", "nullable": True},
    "attribute": {"type": "string"}, "unit": {"type": "string", "nullable": True},
    "method": {"type": "string", "enum": ["linear", "rf"]}, "metrics": {"type": "array", "items": {"type": "string"}},
    "resolution_m": {"type": "number", "description": "grid cell the model applies to (the plots' area)"},
    "validation": _VALIDATION, "created": {"type": "string", "format": "date-time"},
    "parameters": {"type": "object", "description": "the model: coefficients, training ranges, importance"},
    "plots": {"type": "array", "items": {"type": "integer"}}, "links": _LINKS}}


def _query(name: str, description: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


PATHS: dict[str, dict] = {
    "/area-models": {"get": {
        "operationId": "getAreaModels", "tags": ["area-models"],
        "summary": "Area-based models (fit-area-model) the caller may read, newest first",
        "parameters": [_query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                       _query("after", "follow the `next` link", ROW_ID),
                       _query("project", "only this project's", ROW_ID),
                       _query("scan", "only those fitted on this scan", ROW_ID)],
        "responses": {"200": {"description": "the models", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"models": {"type": "array", "items": _MODEL}, "links": _LINKS,
                                             "numberReturned": {"type": "integer"}}}}}},
                      "400": _PROBLEM}}},
    "/area-models/{modelId}": {"get": {
        "operationId": "getAreaModel", "tags": ["area-models"],
        "summary": "One area-based model: metrics, coefficients, validation with observed vs predicted",
        "parameters": [{"name": "modelId", "in": "path", "required": True, "schema": ROW_ID},
                       _query("f", "json, or html: a page with the validation charts",
                              {"type": "string", "enum": ["json", "html"], "default": "json"})],
        "responses": {"200": {"description": "the model", "content": {"application/json": {"schema": _MODEL},
                                                                      "text/html": {"schema": {"type": "string"}}}},
                      "404": _PROBLEM}}},
}
