"""One self-contained OpenAPI document for every route.

pygeoapi's generated document `$ref`s OGC schemas on external hosts, so offline
tools and code generators cannot resolve it. `build_openapi` replaces each external
reference by a local component written out here (from the OGC API - Features and
Processes schemas), adds the parameters Canopy supports (CQL2 filter, cursor),
PATCH and ETag on editable items, and Canopy's own routes.
"""

from __future__ import annotations

import copy
from typing import Any

from pygeoapi.openapi import get_oas

from .auth.openapi_paths import PATHS as AUTH_PATHS
from .exports import PATHS as EXPORT_PATHS
from .field_plots import PATHS as FIELD_PLOT_PATHS
from .inputs import TEXT_PATTERN
from .runs.openapi_paths import PATHS as RUN_PATHS, RUN_PARAMETER
from .area_models.openapi_paths import PATHS as AREA_MODEL_PATHS
from .tiles.openapi_paths import PATHS as TILE_PATHS
from .uploads.openapi_paths import PATHS as UPLOAD_PATHS
from .pages.openapi_paths import PATHS as PAGE_PATHS
from .settings import Settings

_LINK = {"type": "object", "required": ["href"], "properties": {
    "href": {"type": "string"}, "rel": {"type": "string"}, "type": {"type": "string"},
    "hreflang": {"type": "string"}, "title": {"type": "string"}, "length": {"type": "integer"}}}
_EXCEPTION = {"type": "object", "required": ["code"], "properties": {
    "code": {"type": "string"}, "description": {"type": "string"}, "type": {"type": "string"},
    "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
    "instance": {"type": "string"}}, "additionalProperties": True}
_PROBLEM = {"type": "object", "required": ["type", "title", "status"], "properties": {
    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
    "detail": {"type": "string"}, "instance": {"type": "string"}}, "additionalProperties": True}
_FEATURE = {"type": "object", "required": ["type", "geometry", "properties"], "properties": {
    "type": {"type": "string", "enum": ["Feature"]},
    "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "geometry": {"nullable": True, "allOf": [{"$ref": "#/components/schemas/GeoJSONGeometry"}]},
    "properties": {"type": "object", "nullable": True},
    "links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}}}}
_GEOMETRY = {"type": "object", "required": ["type"], "properties": {
    "type": {"type": "string", "enum": ["Point", "MultiPoint", "LineString", "MultiLineString",
                                        "Polygon", "MultiPolygon", "GeometryCollection"]},
    "coordinates": {"type": "array"}, "geometries": {"type": "array"}}}
_FEATURES = {"type": "object", "required": ["type", "features"], "properties": {
    "type": {"type": "string", "enum": ["FeatureCollection"]},
    "features": {"type": "array", "items": {"$ref": "#/components/schemas/featureGeoJSON"}},
    "links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}},
    "timeStamp": {"type": "string", "format": "date-time"},
    "numberMatched": {"type": "integer", "minimum": 0},
    "numberReturned": {"type": "integer", "minimum": 0}}}
_JSON_OBJECT = {"type": "object", "additionalProperties": True}
_STATUS_INFO = {"type": "object", "required": ["jobID", "status", "type"], "properties": {
    "type": {"type": "string", "enum": ["process"]}, "processID": {"type": "string"},
    "jobID": {"type": "string"},
    "status": {"type": "string", "enum": ["accepted", "running", "successful", "failed", "dismissed"]},
    "message": {"type": "string"}, "progress": {"type": "integer", "minimum": 0, "maximum": 100},
    "created": {"type": "string", "format": "date-time", "nullable": True},
    "started": {"type": "string", "format": "date-time", "nullable": True},
    "finished": {"type": "string", "format": "date-time", "nullable": True},
    "updated": {"type": "string", "format": "date-time", "nullable": True},
    "scan": {"type": "integer", "description": "the scan the job works on (its `scan` input)"},
    "runs": {"type": "object", "description": "the runs it compares (its `before` and `after` inputs)",
             "additionalProperties": {"type": "string"}},
    "links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}}}}
_EXECUTE = {"type": "object", "properties": {
    "inputs": {"type": "object", "additionalProperties": True},
    "outputs": {"type": "object", "additionalProperties": True},
    "response": {"type": "string", "enum": ["raw", "document"]},
    "subscriber": {"type": "object", "required": ["successUri"], "properties": {
        "successUri": {"type": "string", "format": "uri"}, "inProgressUri": {"type": "string", "format": "uri"},
        "failedUri": {"type": "string", "format": "uri"}}}}}


def _json(description: str, schema: dict, media: str = "application/json") -> dict:
    return {"description": description, "content": {media: {"schema": schema}}}


def _problem(description: str) -> dict:
    return _json(description, {"$ref": "#/components/schemas/problem"}, "application/problem+json")


_INSTANT = (r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
            r"([T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?")
# what server/features.py `_check_datetime` takes: an instant, or an interval with open (`..` or empty) ends
DATETIME_PATTERN = rf"^({_INSTANT}|({_INSTANT}|\.\.)?/({_INSTANT}|\.\.)?)$"
_EXCEPTION_RESPONSE = {"$ref": "#/components/schemas/exception"}
COMPONENTS: dict[str, dict[str, Any]] = {
    "schemas": {"link": _LINK, "exception": _EXCEPTION, "problem": _PROBLEM,
                "featureGeoJSON": _FEATURE, "featureCollectionGeoJSON": _FEATURES,
                "GeoJSONGeometry": _GEOMETRY, "statusInfo": _STATUS_INFO, "execute": _EXECUTE},
    "parameters": {
        "datetime": {"name": "datetime", "in": "query", "required": False, "style": "form",
                     "explode": False, "schema": {"type": "string", "pattern": DATETIME_PATTERN},
                     "description": "An instant or a closed or open interval (RFC 3339, `..` for open ends)."},
        "featureId": {"name": "featureId", "in": "path", "required": True,
                      "schema": {"type": "string"}, "description": "local identifier of a feature"},
        "sortby": {"name": "sortby", "in": "query", "required": False, "style": "form",
                   "explode": False, "schema": {"type": "array", "items": {"type": "string",
                                                                           "pattern": "[+|-]?[A-Za-z_].*"}},
                   "description": "Comma-separated properties to sort by, `-` for descending."},
        "filter": {"name": "filter", "in": "query", "required": False, "schema": {"type": "string", "minLength": 1},
                   "description": "A CQL2 text filter over the collection's queryables."},
        "filter-lang": {"name": "filter-lang", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": ["cql2-text", "cql2-json"],
                                   "default": "cql2-text"}},
        "filter-crs": {"name": "filter-crs", "in": "query", "required": False,
                       "schema": {"type": "string", "format": "uri"}},
        "cursor": {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                   "description": "Opaque page position; follow the `next`/`prev` links rather than "
                                  "building it."},
        "If-Match": {"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"},
                     "description": "The ETag of the item as last read, or `*`: required, 428 without it "
                                    "(RFC 6585), 412 when the item has changed since."},
    },
    "responses": {
        "LandingPage": _json("The landing page", _JSON_OBJECT),
        "Collection": _json("Information about a feature collection", _JSON_OBJECT),
        "Features": _json("A page of features",
                          {"$ref": "#/components/schemas/featureCollectionGeoJSON"}, "application/geo+json"),
        "Feature": {**_json("A feature", {"$ref": "#/components/schemas/featureGeoJSON"},
                            "application/geo+json"),
                    "headers": {"ETag": {"schema": {"type": "string"}}}},
        "InvalidParameter": _json("A query parameter has an invalid value.", _EXCEPTION_RESPONSE),
        "NotFound": _json("The requested resource does not exist on the server.", _EXCEPTION_RESPONSE),
        "ServerError": _json("A server error occurred.", _EXCEPTION_RESPONSE),
        "PreconditionFailed": _json("The item changed since it was read (If-Match).", _EXCEPTION_RESPONSE),
        "PreconditionRequired": _problem("If-Match is required to change an item."),
        "Problem": _problem("The request cannot be served; the body says why."),
        "ExecuteAsync": {**_json("The job was created and queued", {"$ref": "#/components/schemas/statusInfo"}),
                         "headers": {"Location": {"schema": {"type": "string"}, "description": "the job's URL"}}},
        "ProcessList": _json("The processes", _JSON_OBJECT),
    },
}

# external reference (by its last path element or fragment) -> local component
_LOCAL = {
    "parameters/datetime": "#/components/parameters/datetime",
    "parameters/featureId": "#/components/parameters/featureId",
    "sortby.yaml": "#/components/parameters/sortby",
    "responses/Collection": "#/components/responses/Collection",
    "responses/Features": "#/components/responses/Features",
    "responses/InvalidParameter": "#/components/responses/InvalidParameter",
    "responses/LandingPage": "#/components/responses/LandingPage",
    "responses/NotFound": "#/components/responses/NotFound",
    "responses/ServerError": "#/components/responses/ServerError",
    "NotFound.yaml": "#/components/responses/NotFound",
    "ServerError.yaml": "#/components/responses/ServerError",
    "ExecuteAsync.yaml": "#/components/responses/ExecuteAsync",
    "ProcessList.yaml": "#/components/responses/ProcessList",
    "schemas/execute.yaml": "#/components/schemas/execute",
    "exception.yaml": "#/components/schemas/exception",
    "schemas/link": "#/components/schemas/link",
}


def _localise(node: Any) -> Any:
    """Replace every external `$ref` by its local component; fail loudly on unknown ones."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            for suffix, local in _LOCAL.items():
                if ref.endswith(suffix):
                    return {"$ref": local}
            raise ValueError(f"external $ref with no local copy: {ref}")
        return {k: _localise(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_localise(v) for v in node]
    return node


def _canopy_paths() -> dict:
    return {
        "/healthz": {"get": {"summary": "Liveness: the process answers", "tags": ["operations"],
                             "operationId": "healthz",
                             "responses": {"200": _json("alive", _JSON_OBJECT)}}},
        "/jobs/{jobId}/events": {"get": {
            "summary": "Live progress of a job as Server-Sent Events, until it ends", "tags": ["jobs"],
            "operationId": "jobEvents",
            "parameters": [{"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "events named after the job's status, data as statusInfo",
                                  "content": {"text/event-stream": {"schema": {
                                      "type": "object", "description": "each event's data: statusInfo JSON "
                                      "(or a problem on `event: error`)"}}}},
                          "404": {"$ref": "#/components/responses/NotFound"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (an admin token, or a client on a private network)",
                             "tags": ["operations"], "operationId": "metrics",
                             "responses": {"200": {"description": "Prometheus' text format", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}},
                                 "403": {"$ref": "#/components/responses/Problem"}}}},
        "/readyz": {"get": {"summary": "Readiness: database, Redis and storage are reachable",
                            "tags": ["operations"], "operationId": "readyz",
                            "responses": {"200": _json("ready", _JSON_OBJECT),
                                          "503": _json("not ready; the body names what is down",
                                                       _JSON_OBJECT)}}},
    }


def build_openapi(config: dict, settings: Settings) -> dict:
    """pygeoapi's document for `config`, made self-contained, with Canopy's additions."""
    doc = _localise(copy.deepcopy(get_oas(config)))
    for kind, entries in COMPONENTS.items():
        doc["components"].setdefault(kind, {}).update(entries)
    doc["servers"] = [{"url": settings.public_url, "description": "Canopy"}]
    tags = doc.setdefault("tags", [])
    tags.append({"name": "operations", "description": "Health and readiness"})
    for path, item in doc["paths"].items():
        if path.endswith("/items") and "get" in item:
            item["get"]["parameters"] += [{"$ref": f"#/components/parameters/{p}"}
                                          for p in ("filter", "filter-lang", "filter-crs", "cursor")]
            if path in ("/collections/trees/items", "/collections/crowns/items", "/collections/rasters/items"):
                item["get"]["parameters"].append(dict(RUN_PARAMETER))
            item["get"]["responses"]["200"] = {"$ref": "#/components/responses/Features"}
            _declare_exports(doc, item["get"])
        if path.endswith("/items/{featureId}") and "get" in item:
            item["get"]["responses"]["200"] = {"$ref": "#/components/responses/Feature"}
            if "put" in item:
                for method in ("put", "delete"):
                    item[method]["parameters"] = item[method].get("parameters", []) + [
                        {"$ref": "#/components/parameters/If-Match"}]
                    item[method]["responses"].update({
                        "412": {"$ref": "#/components/responses/PreconditionFailed"},
                        "428": {"$ref": "#/components/responses/PreconditionRequired"}})
                # PUT and PATCH answer 200 with the item as stored (server/features.py)
                item["put"]["responses"].pop("204", None)
                item["put"]["responses"]["200"] = {"$ref": "#/components/responses/Feature"}
                patch = copy.deepcopy(item["put"])
                patch["summary"] = patch["summary"].replace("Update", "Patch")
                patch["operationId"] = patch["operationId"].replace("update", "patch")
                patch["requestBody"]["content"] = {"application/merge-patch+json": {
                    "schema": {"$ref": "#/components/schemas/featureGeoJSON"}}}
                item["patch"] = patch
    dismiss = doc["paths"].get("/jobs/{jobId}", {}).get("delete")
    if dismiss:                    # the dismissed job's statusInfo (OGC API - Processes /req/dismiss)
        dismiss["responses"]["200"] = _json("The job, dismissed", {"$ref": "#/components/schemas/statusInfo"})
    doc["paths"].update(_canopy_paths())
    doc["paths"].update(AUTH_PATHS)
    doc["paths"].update(EXPORT_PATHS)
    doc["paths"].update(TILE_PATHS)
    doc["paths"].update(RUN_PATHS)
    doc["paths"].update(AREA_MODEL_PATHS)
    doc["paths"].update(FIELD_PLOT_PATHS)
    doc["paths"].update(PAGE_PATHS)
    doc["paths"].update(UPLOAD_PATHS)
    tags.append({"name": "uploads", "description": "Resumable uploads of LAS/LAZ files (tus 1.0.0)"})
    tags.append({"name": "runs", "description": "Each scan's runs: the products of every job, kept"})
    tags.append({"name": "area-models", "description": "Area-based models of plot attributes (fit-area-model)"})
    _declare_security(doc)
    _declare_executions(doc, config)
    _declare_media_types(doc, config)
    _declare_statuses(doc)
    _declare_text_rule(doc)
    return doc


_FORMAT_MEDIA = {"html": "text/html", "jsonld": "application/ld+json"}
_FORMAT_SCHEMA = {"html": {"type": "string"}, "jsonld": {"type": "object"}}
# what /collections/{id}/queryables and /schema answer: a JSON Schema (pygeoapi's component
# describes a `queryables` array it does not send)
_JSON_SCHEMA_DOCUMENT = {"type": "object", "required": ["type", "properties"], "properties": {
    "$schema": {"type": "string"}, "$id": {"type": "string"}, "type": {"type": "string", "enum": ["object"]},
    "title": {"type": "string"}, "properties": {"type": "object"}}}
_JSON_ONLY = ("/conformance", "/jobs/{jobId}", "/jobs/{jobId}/results")    # Canopy's own routes (server/inputs.py `_formats`)


def _add_formats(content: dict, formats) -> None:
    for fmt in set(formats) & set(_FORMAT_MEDIA):
        content[_FORMAT_MEDIA[fmt]] = {"schema": _FORMAT_SCHEMA[fmt]}


def _declare_media_types(doc: dict, config: dict) -> None:
    """What the server really answers with, on every operation (schemathesis compares):
    errors are problem+json (server/errors.py; pygeoapi's own exception documents are
    JSON, so both, and HTML or JSON-LD when f asked for those), OPTIONS is a 204 with
    `Allow`, queryables and schemas are application/schema+json, a GET taking
    `f=html|jsonld` answers those too; and the values the server checks (crs, datetime,
    f on JSON-only routes) are declared as it checks them."""
    responses = doc["components"]["responses"]
    for name in ("InvalidParameter", "NotFound", "ServerError", "PreconditionFailed", "default"):
        responses[name]["content"]["application/problem+json"] = {"schema": {"$ref": "#/components/schemas/problem"}}
        _add_formats(responses[name]["content"], _FORMAT_MEDIA)   # pygeoapi answers f=html|jsonld errors in kind
    doc["components"]["schemas"]["queryables"] = _JSON_SCHEMA_DOCUMENT
    params = doc["components"]["parameters"]
    f_enum = set(params["f"]["schema"]["enum"])
    served_crs = sorted({crs for resource in config["resources"].values()
                         for provider in resource.get("providers", []) for crs in provider.get("crs", [])})
    for name in ("crs", "bbox-crs"):                     # the CRSs the collections' providers list
        params[name]["schema"] = {"type": "string", "format": "uri", "enum": served_crs}
    params["f-json"] = {**params["f"], "schema": {"type": "string", "enum": ["json"], "default": "json"},
                        "description": "The output format: JSON only here."}
    for name in ("LandingPage", "Collection", "Features", "FeaturesOrExport", "Feature"):
        content = responses.get(name, {}).get("content", {})
        content.setdefault("application/json", next(iter(content.values()), {}))   # Accept: application/json
        _add_formats(content, f_enum)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for status, response in op["responses"].items():
                content = response.get("content", {})
                if (status[0] in "45" or status == "default") and "application/json" in content:
                    content.setdefault("application/problem+json", {"schema": {"$ref": "#/components/schemas/problem"}})
            if path in _JSON_ONLY:
                op["parameters"] = [{"$ref": "#/components/parameters/f-json"}
                                    if p == {"$ref": "#/components/parameters/f"} else p for p in op["parameters"]]
            if method == "options" and "200" in op["responses"]:
                op["responses"]["204"] = {"description": "What the caller may do here",
                                          "headers": {"Allow": {"schema": {"type": "string"}}}}
                del op["responses"]["200"]
            ok = op["responses"].get("200")
            if isinstance(ok, dict) and "$ref" in ok:
                ok = responses.get(ok["$ref"].rsplit("/", 1)[1])
            if method != "get" or not isinstance(ok, dict) or "content" not in ok:
                continue
            if path.endswith(("/queryables", "/schema")):
                ok["content"].setdefault("application/schema+json", ok["content"].get("application/json", {}))
            if {"$ref": "#/components/parameters/f"} in op.get("parameters", []):
                _add_formats(ok["content"], f_enum)


def _openapi30(schema: Any) -> Any:
    """A process input's JSON Schema (2020-12, as server/jobs/views.py validates it) in
    OpenAPI 3.0's dialect: a numeric exclusiveMinimum/Maximum as minimum/maximum with the
    boolean flag, `const` as a one-value enum, a `{"type": "null"}` alternative as
    `nullable`."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _openapi30(member) for name, member in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _openapi30(value)
        elif key in ("oneOf", "anyOf", "allOf"):
            members = [_openapi30(member) for member in value]
            kept = [m for m in members if m != {"type": "null"}]
            if len(kept) < len(members):
                out["nullable"] = True
                kept = [{**m, "nullable": True} for m in kept]
            if len(kept) == 1 and key != "allOf":
                out.update(kept[0])
            else:
                out[key] = kept
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound], out[key] = value, True
        else:
            out[key] = copy.deepcopy(value)
    return out


def _execute_schema(metadata: dict) -> dict:
    """The execute request of one process, from its description: each input's schema,
    the required ones (minOccurs 1) and no others, as server/jobs/views.py checks them."""
    described = metadata.get("inputs", {})
    required = [name for name, spec in described.items() if spec.get("minOccurs", 1) >= 1]
    inputs = {"type": "object", "additionalProperties": False,
              "properties": {name: _openapi30(spec.get("schema", {})) for name, spec in described.items()}}
    body = copy.deepcopy(_EXECUTE)
    body["properties"]["inputs"] = inputs
    if required:
        inputs["required"] = required
        body["required"] = ["inputs"]
    return body


def _declare_executions(doc: dict, config: dict) -> None:
    """Each process's execution takes its own inputs (components/schemas/execute-{id}),
    not pygeoapi's one free-form execute body."""
    from pygeoapi.plugin import load_plugin

    for process_id, resource in config["resources"].items():
        op = doc["paths"].get(f"/processes/{process_id}/execution", {}).get("post")
        if resource.get("type") != "process" or op is None:
            continue
        name = f"execute-{process_id}"
        doc["components"]["schemas"][name] = _execute_schema(load_plugin("process", resource["processor"]).metadata)
        for content in op["requestBody"]["content"].values():
            content["schema"] = {"$ref": f"#/components/schemas/{name}"}


def _declare_statuses(doc: dict) -> None:
    """Statuses pygeoapi's operations answer that its document leaves out: 404 wherever
    the path names something (an id that is not there, or not visible to the caller),
    415 for a POST to items whose body is neither a Feature nor a CQL2 JSON query
    (server/features.py `_check_write`)."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if "{" in path:
                op["responses"].setdefault("404", {"$ref": "#/components/responses/NotFound"})
            if method == "post" and path.startswith("/collections/") and path.endswith("/items"):
                op["responses"].setdefault("415", {"$ref": "#/components/responses/Problem"})


def _declare_text_rule(doc: dict) -> None:
    """Every free string a client sends (parameters and request bodies, and the schemas
    they refer to) carries the one text rule of server/inputs.py as a `pattern`, so the
    400 for a control character is documented, not a surprise."""
    schemas, seen = doc["components"]["schemas"], set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for member in node:
                walk(member)
        if not isinstance(node, dict):
            return
        ref = node.get("$ref", "")
        if ref.startswith("#/components/schemas/") and ref not in seen:
            seen.add(ref)
            walk(schemas.get(ref.rsplit("/", 1)[1]))
        if node.get("type") == "string" and not {"enum", "format", "pattern", "const"} & node.keys():
            node["pattern"] = TEXT_PATTERN
        for key, member in node.items():
            if key not in ("responses", "examples", "example", "default"):
                walk(member)

    walk(doc["components"].get("parameters", {}))
    for item in doc["paths"].values():
        walk(item.get("parameters", []))                   # the path's own
        for op in item.values():
            if isinstance(op, dict):
                walk(op.get("parameters", []))
                walk(op.get("requestBody", {}))


def _declare_exports(doc: dict, op: dict) -> None:
    """Items also answer as files (server/exports): `f` lists them and the 200 response
    carries their media types beside GeoJSON."""
    from .exports.writer import FORMATS
    params, responses = doc["components"]["parameters"], doc["components"]["responses"]
    if "f-items" not in params:
        f = copy.deepcopy(params["f"])
        f["schema"]["enum"] = list(dict.fromkeys(f["schema"]["enum"] + ["csv", *FORMATS]))
        f["description"] = ("The output format: GeoJSON (json, the default), html, jsonld, or a file of every "
                            "matching item (not one page): gpkg (GeoPackage), shp (zipped Shapefile), fgb "
                            "(FlatGeobuf), csv (flat: projected x/y with crs_epsg, lon/lat, one column per "
                            "metric named with its unit). Accept with the media types works too.")
        params["f-items"] = f
        features = copy.deepcopy(responses["Features"])
        features["description"] = "A page of features, or with f=gpkg|shp|fgb|csv a file of all of them"
        for fmt in FORMATS.values():
            features["content"][fmt.media_type.split(";")[0]] = {"schema": {"type": "string", "format": "binary"}}
        features["headers"] = {"Content-Disposition": {"schema": {"type": "string"},
                                                       "description": "attachment; filename=... (files)"}}
        responses["FeaturesOrExport"] = features
    op["parameters"] = [{"$ref": "#/components/parameters/f-items"} if p == {"$ref": "#/components/parameters/f"}
                        else p for p in op["parameters"]]
    op["responses"]["200"] = {"$ref": "#/components/responses/FeaturesOrExport"}


_WRITES = ("post", "put", "patch", "delete")


def _declare_security(doc: dict) -> None:
    """The bearer scheme on every operation: optional on reads (anonymous callers see
    public projects), required on writes; operations that declare their own keep it."""
    doc["components"].setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access token from POST /auth/token, a personal access token from "
                       "POST /auth/tokens, or a token of the configured OpenID provider"}
    doc["tags"].append({"name": "auth", "description": "Tokens, users, projects and members"})
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or method not in ("get", "head", "options", *_WRITES):
                continue
            if "security" in op or path in ("/healthz", "/readyz"):
                continue
            op["security"] = [{"bearerAuth": []}] if method in _WRITES else [{}, {"bearerAuth": []}]
            # a write needs a token; any request with a token that is no longer valid is a 401
            op.setdefault("responses", {}).setdefault("401", {"$ref": "#/components/responses/Problem"})
