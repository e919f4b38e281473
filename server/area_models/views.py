"""/area-models and /area-models/{id}: the models fit-area-model stored, as JSON.

The access policy is the project's (server/auth/policy.py): whoever may read a project
reads its models (the list filters in SQL, so paging sees only those); a model the
caller may not see answers 404 like a missing one. Pages go newest first by id with
`limit` (1-1000) and a `next` link.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, request

from db.pool import get_pool
from providers.schema import parse_id

from ..auth import policy
from ..errors import BadRequest, NotFound
from ..inputs import check_query
from ..pages import area_model as area_model_page
from . import store

bp = Blueprint("area_models", __name__)
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000
_QUERY = {"limit", "after", "project", "scan", "f"}


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def model_json(row: dict, base: str, full: bool) -> dict:
    """A model as the API shows it: the list leaves out the observed-vs-predicted pairs."""
    mid = row["id"]
    validation = dict(row["validation"])
    if not full:
        validation = {k: v for k, v in validation.items() if k not in ("observed", "predicted", "plot_ids")}
    links = [{"rel": "self", "type": "application/json", "href": f"{base}/area-models/{mid}"},
             {"rel": "collection", "type": "application/json", "href": f"{base}/area-models"},
             {"rel": "http://www.opengis.net/def/rel/ogc/1.0/execute", "type": "application/json",
              "title": "map it (predict-area-model)", "href": f"{base}/processes/predict-area-model/execution"}]
    if row["scan_id"]:
        links.append({"rel": "related", "type": "application/geo+json", "title": "scan",
                      "href": f"{base}/collections/scans/items/{row['scan_id']}"})
    if row["job_id"]:
        links.append({"rel": "via", "type": "application/json", "title": "the fit job",
                      "href": f"{base}/jobs/{row['job_id']}"})
    out = {"id": mid, "project_id": row["project_id"], "scan_id": row["scan_id"], "attribute": row["attribute"],
           "unit": row["unit"], "method": row["method"], "metrics": list(row["metrics"]),
           "resolution_m": row["resolution_m"], "validation": validation, "created": _iso(row["created_at"]),
           "links": links}
    if full:
        out["parameters"] = row["parameters"]
        out["plots"] = list(row["plots"])
    return out


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return parse_id(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a row id (a positive integer)") from None


@bp.get("/area-models")
def list_models():
    check_query(_QUERY)
    limit = _int_arg("limit")
    limit = LIMIT_DEFAULT if limit is None else limit
    if not 1 <= limit <= LIMIT_MAX:
        raise BadRequest(f"limit must be between 1 and {LIMIT_MAX}")
    after, project, scan = _int_arg("after"), _int_arg("project"), _int_arg("scan")
    with get_pool().connection() as conn:
        rows = store.page(conn, policy.current(), limit, after, project, scan)
    base = current_app.config["CANOPY_SETTINGS"].public_url
    more, rows = len(rows) > limit, rows[:limit]
    keep = {k: v for k, v in (("project", project), ("scan", scan)) if v is not None}
    links = [{"rel": "self", "type": "application/json", "href": f"{base}/area-models?{urlencode(keep | {'limit': limit})}"}]
    if more:
        links.append({"rel": "next", "type": "application/json",
                      "href": f"{base}/area-models?{urlencode(keep | {'limit': limit, 'after': rows[-1]['id']})}"})
    return jsonify(models=[model_json(r, base, False) for r in rows], links=links, numberReturned=len(rows))


@bp.get("/area-models/<id:model_id>")
def get_model(model_id: int):
    with get_pool().connection() as conn:
        row = store.get(conn, model_id)
    if row is None:
        raise NotFound(f"no area model {model_id}")
    try:
        policy.require_project(row["project_id"], policy.READ)
    except NotFound:
        raise NotFound(f"no area model {model_id}")
    base = current_app.config["CANOPY_SETTINGS"].public_url
    model = model_json(row, base, True)
    if request.args.get("f") == "html":
        return Response(area_model_page.render(model, base), mimetype="text/html")
    return jsonify(model)

