"""OGC API - Processes execution and /jobs, on Canopy's job system.

pygeoapi still lists and describes the processes (`/processes`, `/processes/{id}`);
execution and jobs are served here because pygeoapi 0.21 runs async jobs on a thread
in the web process, ignores paging on `/jobs` and cannot stop a running job.
Every job runs on a Huey worker, synchronous ones included: the request waits for
the job (at most CANOPY_SYNC_WAIT_SECONDS, then it answers like an asynchronous one).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from functools import lru_cache

import jsonschema
from flask import Blueprint, current_app, jsonify, request

from db.pool import get_pool

from ..auth import policy
from ..errors import BadRequest, CanopyError, Forbidden, NotFound
from ..pages import jobs_html
from . import callbacks, events, registry, store
from .follow import follow_up
from .queue import push, revoke, task_for

bp = Blueprint("jobs", __name__)
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/callback",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/dismiss",
]
OGC_EXC = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
SYNC_MAX_SECONDS = 10.0


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def status_info(job: dict) -> dict:
    base = current_app.config["CANOPY_SETTINGS"].public_url
    url = f"{base}/jobs/{job['id']}"
    links = [{"href": url, "rel": "self", "type": "application/json", "title": "this job"},
             {"href": f"{url}/events", "rel": "monitor", "type": "text/event-stream", "title": "live progress"}]
    if job["status"] == "successful":
        links.append({"href": f"{url}/results", "rel": "http://www.opengis.net/def/rel/ogc/1.0/results",
                      "type": "application/json", "title": "results"})
    info = {"type": "process", "jobID": job["id"], "processID": job["process_id"], "status": job["status"],
            "message": job["message"], "progress": job["progress"], "created": _iso(job["created"]),
            "started": _iso(job["started"]), "finished": _iso(job["finished"]), "updated": _iso(job["updated"]),
            "links": links}
    # what the job works on, so a list of jobs can name it: its scan, or the runs it compares
    inputs = (job.get("inputs") or {}).get("inputs") or {}
    if type(inputs.get("scan")) is int:          # not a bool
        info["scan"] = inputs["scan"]
    runs = {k: inputs[k] for k in ("before", "after") if isinstance(inputs.get(k), str)}
    if runs:
        info["runs"] = runs
    return info


def absolute_links(value):
    """Results keep links relative to the API root; serve them absolute."""
    base = current_app.config["CANOPY_SETTINGS"].public_url
    if isinstance(value, dict):
        return {k: (base + v if k in ("href", "tilejson", "feature") and isinstance(v, str) and v.startswith("/")
                    else absolute_links(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [absolute_links(v) for v in value]
    return value


@lru_cache(maxsize=512)
def _validator_cached(process_id: str, name: str, schema_json: str):
    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def _validator(process_id: str, name: str, schema: dict):
    return _validator_cached(process_id, name, json.dumps(schema, sort_keys=True))


def _validate_inputs(process_id: str, metadata: dict, given: object) -> dict:
    """Inputs checked against the process description: unknown, missing and out of
    bounds inputs are 400s; defaults filled in."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise BadRequest("inputs must be an object")
    described = metadata.get("inputs", {})
    unknown = sorted(set(given) - set(described))
    if unknown:
        raise BadRequest(f"unknown input(s) {', '.join(unknown)}; this process takes: {', '.join(described)}",
                         code="InvalidParameterValue")
    inputs = {}
    for name, spec in described.items():
        schema = spec.get("schema", {})
        if name not in given:
            if spec.get("minOccurs", 1) >= 1:
                raise BadRequest(f"input {name!r} is required", code="MissingParameterValue")
            if "default" in schema:
                inputs[name] = schema["default"]
            continue
        error = jsonschema.exceptions.best_match(_validator(process_id, name, schema).iter_errors(given[name]))
        if error is not None:
            raise BadRequest(f"input {name!r}: {error.message}")
        inputs[name] = given[name]
    return inputs


def _scan_project(scan_id: int) -> int:
    with get_pool().connection() as conn:
        row = conn.execute("SELECT project_id FROM scans WHERE id = %s", (scan_id,)).fetchone()
    if row is None:
        raise NotFound(f"no scan {scan_id}")
    return row[0]


def _runs_project(run_ids: list[str]) -> int:
    """The project of the last of `run_ids` (where a process reading runs commits its
    products: the caller must be able to change it) after checking that the caller may
    read every one of them (a run they may not see is answered as missing)."""
    project_id = None
    for run_id in run_ids:
        with get_pool().connection() as conn:
            row = conn.execute("SELECT project_id FROM runs WHERE id = %s", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id!r}: give the id of a successful job that made products")
        try:
            policy.require_project(row[0], policy.READ)
        except NotFound:
            raise NotFound(f"no run {run_id!r}: give the id of a successful job that made products")
        project_id = row[0]
    policy.require_project(project_id, policy.WRITE)
    return project_id


@bp.post("/processes/<process_id>/execution")
def execute(process_id: str):
    definition = registry.definitions().get(process_id)
    if definition is None:
        raise NotFound(f"no process {process_id!r}", code="NoSuchProcess")
    principal = policy.require_user()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("send a JSON execute request: {\"inputs\": {...}}")
    processor = registry.processor(process_id)
    inputs = _validate_inputs(process_id, processor.metadata, body.get("inputs"))
    project_id = None
    if "scan" in inputs:
        project_id = _scan_project(inputs["scan"])
        try:
            policy.require_project(project_id, policy.WRITE)
        except NotFound:
            raise NotFound(f"no scan {inputs['scan']}")
    elif getattr(processor, "run_inputs", ()):
        project_id = _runs_project([inputs[k] for k in processor.run_inputs])
    if project_id is None:
        policy.require_unscoped("run a process outside its project")
    settings = current_app.config["CANOPY_SETTINGS"]
    try:
        subscriber = callbacks.validate(body.get("subscriber"), allow_private=settings.callbacks_allow_private)
    except ValueError as err:
        raise BadRequest(str(err))
    wants_async = "respond-async" in request.headers.get("Prefer", "")
    sync = not wants_async and processor.sync and float(inputs.get("delay", 0)) <= SYNC_MAX_SECONDS
    job_id = store.new_id()
    task = task_for(job_id)
    job = store.create(process_id, inputs, principal.user_id, project_id, subscriber, job_id=job_id,
                       task_id=task.id)
    push(task)
    if sync:
        job = events.wait_final(job_id, lambda: store.get(job_id, check=False), store.FINAL,
                                settings.sync_wait_seconds)
        if job["status"] == "successful":
            return jsonify(absolute_links(job["results"]))
        if job["status"] in store.FINAL:
            raise CanopyError(job["message"] or "the process failed", status=400, code="ProcessFailed")
        # not done in time (no worker free): the client follows the job like an asynchronous one
    headers = {"Location": status_info(job)["links"][0]["href"]}
    if wants_async:
        headers["Preference-Applied"] = "respond-async"
    return jsonify(status_info(job)), 201, headers


def _job_or_404(job_id: str) -> dict:
    job = store.get(job_id, policy.current())
    if job is None:
        raise NotFound(f"no job {job_id}", code="no-such-job")
    return job


@bp.get("/jobs")
def list_jobs():
    args = request.args
    unknown = set(args) - {"limit", "cursor", "processID", "status", "f"}
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    try:
        limit = int(args.get("limit", 100))
    except ValueError:
        raise BadRequest("limit must be an integer")
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be between 1 and 1000")
    status = args.get("status")
    if status and status not in ("accepted", "running", "successful", "failed", "dismissed"):
        raise BadRequest(f"unknown status {status!r}")
    before = None
    if args.get("cursor"):
        try:
            created, ident = json.loads(base64.urlsafe_b64decode(args["cursor"] + "=="))
            before = (datetime.fromisoformat(created), str(ident))
        except (ValueError, TypeError):
            raise BadRequest("cursor is not one this server made")
    rows = store.page(policy.current(), process_id=args.get("processID"), status=status, limit=limit,
                      before=before)
    more, rows = len(rows) > limit, rows[:limit]
    base = current_app.config["CANOPY_SETTINGS"].public_url
    links = [{"href": f"{base}/jobs", "rel": "self", "type": "application/json"}]
    if more:
        cursor = base64.urlsafe_b64encode(json.dumps([rows[-1]["created"].isoformat(), rows[-1]["id"]]).encode())
        params = {k: v for k, v in args.items() if k != "cursor"}
        params["cursor"] = cursor.decode().rstrip("=")
        from urllib.parse import urlencode
        links.append({"href": f"{base}/jobs?{urlencode(params)}", "rel": "next", "type": "application/json"})
    if jobs_html.wants_html():
        return jobs_html.render([status_info(j) for j in rows], links)
    return jsonify(jobs=[status_info(j) for j in rows], links=links)


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify(status_info(_job_or_404(job_id)))


@bp.delete("/jobs/<job_id>")
def dismiss_job(job_id: str):
    policy.require_user()                # 401 before looking, as every write
    job = _job_or_404(job_id)
    if not store.may_dismiss(policy.current(), job):
        raise Forbidden("only the job's owner, an editor of its project or an administrator may dismiss it")
    previous, changes = store.dismiss(job_id)      # any state: a finished job loses its results
    if previous == "accepted":
        revoke(job["huey_task_id"])      # never starts; the worker would skip it anyway
    if previous not in (None, "dismissed"):
        events.publish(job_id, "dismissed", job["progress"], "dismissed")   # open event streams end
    follow_up(changes, current_app.config["CANOPY_SETTINGS"])   # a successful job's run files go too
    if previous == "successful":
        from ..extents import refresh_now
        refresh_now()                    # the collections' boxes shrink now, not on the next read
    return jsonify(status_info(store.get(job_id, check=False)))


@bp.get("/jobs/<job_id>/results")
def job_results(job_id: str):
    job = _job_or_404(job_id)
    if job["status"] == "successful":
        return jsonify(absolute_links(job["results"]))
    if job["status"] == "failed":
        raise CanopyError(job["message"] or "the job failed", status=422, code="ProcessFailed")
    if job["status"] == "dismissed":
        raise NotFound(f"job {job_id} was dismissed: its results were removed", code="no-such-job")
    raise NotFound(f"job {job_id} is {job['status']}: no results", code="result-not-ready")
