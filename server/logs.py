"""JSON request logs with a request id (taken from X-Request-Id or made up).

Only the path is logged, never the query string's secrets nor any header, so
passwords and tokens cannot leak into logs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid

from flask import Flask, g, request

_SECRET_PARAMS = {"token", "access_token", "password", "refresh_token"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pygeoapi").setLevel(max(logging.ERROR, root.level))


def register(app: Flask) -> None:
    log = logging.getLogger("canopy.request")

    @app.before_request
    def _start():
        g.request_id = (request.headers.get("X-Request-Id") or uuid.uuid4().hex)[:64]
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        query = {k: ("***" if k.lower() in _SECRET_PARAMS else v) for k, v in request.args.items()}
        log.info("request", extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "path": request.path,
            "query": query, "status": response.status_code,
            "ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
            "remote": request.remote_addr}})
        return response
