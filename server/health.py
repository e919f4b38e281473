"""/healthz (the process answers) and /readyz (database, Redis and storage reachable)."""

from __future__ import annotations

import redis
from flask import Blueprint, current_app, jsonify

from db.pool import get_pool

from .storage import storage_of

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    settings = current_app.config["CANOPY_SETTINGS"]
    checks: dict[str, str] = {}
    try:
        with get_pool(settings.database_url).connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as err:  # any failure means "not ready"; the message says which
        checks["database"] = f"down: {type(err).__name__}"
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        checks["redis"] = "ok"
    except Exception as err:
        checks["redis"] = f"down: {type(err).__name__}"
    try:
        storage_of(settings).check()
        checks["storage"] = "ok"
    except Exception as err:
        checks["storage"] = f"down: {type(err).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), (200 if ready else 503)
