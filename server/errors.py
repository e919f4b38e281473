"""One error type family, rendered as application/problem+json (RFC 9457).

OGC API exceptions need `code` and `description`; our documents carry both those
and the RFC 9457 members, so one body serves OGC clients and generic HTTP clients.
"""

from __future__ import annotations

import errno
from http import HTTPStatus

from flask import Response, g, json, request
from pygeoapi.provider.base import ProviderGenericError
from werkzeug.exceptions import HTTPException


class CanopyError(Exception):
    """Base of every error the server answers with on purpose."""

    status = 500
    code = "ServerError"

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(CanopyError):
    status, code = 400, "InvalidParameterValue"


class Unauthorized(CanopyError):
    status, code = 401, "Unauthorized"


class Forbidden(CanopyError):
    status, code = 403, "Forbidden"


class NotFound(CanopyError):
    status, code = 404, "NotFound"


class MethodNotAllowed(CanopyError):
    status, code = 405, "MethodNotAllowed"


class Conflict(CanopyError):
    status, code = 409, "Conflict"


class PreconditionRequired(CanopyError):
    status, code = 428, "PreconditionRequired"


RETRY_AFTER_S = 5      # what a 503 tells clients to wait: outages of PostgreSQL/Redis restarts last seconds


class ServiceUnavailable(CanopyError):
    """A service the request needs (PostgreSQL, Redis) is unreachable: retry later."""

    status, code = 503, "ServiceUnavailable"

    def __init__(self, detail: str, **kwargs):
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Retry-After", str(RETRY_AFTER_S))


# a store (or scratch disk) that cannot be written now: permissions, full, read-only, failing
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def outage_types() -> tuple[tuple[type, str], ...]:
    """(exception type, which service) of the errors that mean "unreachable, retry"."""
    import psycopg
    import redis
    out = [(psycopg.OperationalError, "the database"),       # AdminShutdown, lost connections, PoolTimeout
           (redis.ConnectionError, "Redis"), (redis.TimeoutError, "Redis")]
    try:
        import psycopg2
        out.append((psycopg2.OperationalError, "the database"))   # pygeoapi's own psycopg2 paths
    except ImportError:
        pass
    return tuple(out)


def unavailable(err: BaseException) -> str | None:
    """Which service `err` says is unavailable now ("the database", "Redis", "storage"), or
    None when it is no outage (a bug, or bad input). The one rule for requests (503) and
    jobs (retried)."""
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        return "storage"
    return next((service for kind, service in outage_types() if isinstance(err, kind)), None)


_EXTRA_STATUSES = {460: "Checksum Mismatch"}


def problem(status: int, detail: str, code: str | None = None, headers: dict | None = None) -> Response:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:                      # statuses of extensions, e.g. tus's 460
        title = _EXTRA_STATUSES.get(status, "Error")
    body = {"type": f"https://httpstatuses.io/{status}" if code is None else
            f"urn:canopy:error:{code}",
            "title": title, "status": status, "detail": detail, "instance": request.path,
            "code": code or title.replace(" ", ""), "description": detail}
    if g.get("request_id"):
        body["request_id"] = g.request_id      # what to quote when reporting it (logs carry it too)
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register(app) -> None:
    @app.errorhandler(CanopyError)
    def _canopy(err: CanopyError):
        return problem(err.status, err.detail, err.code, err.headers)

    @app.errorhandler(ProviderGenericError)
    def _provider(err: ProviderGenericError):
        # what pygeoapi's providers raise, where Canopy calls them itself (PATCH, OPTIONS)
        return problem(int(err.http_status_code), err.message, err.ogc_exception_code)

    def _outage(err):
        service = unavailable(err)
        if service is None:                   # an OSError that is no outage: a bug
            return _unexpected(err)
        # logged without the traceback: an outage, not a bug; its text (a server path, a
        # service's message) never reaches the client
        app.logger.warning("%s unavailable: %s", service, type(err).__name__, extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "path": request.path}})
        return problem(503, f"{service} is unavailable; retry in a few seconds", "ServiceUnavailable",
                       {"Retry-After": str(RETRY_AFTER_S)})

    for kind in [OSError, *(kind for kind, _ in outage_types())]:
        app.register_error_handler(kind, _outage)

    @app.after_request
    def _retry_after(response):
        # every 503 says when to retry, pygeoapi's own exception documents too (registered
        # first, this runs last: the rate limiter's window-based Retry-After is not an outage's)
        if response.status_code == 503:
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.errorhandler(404)
    def _not_found(err):
        return problem(404, f"nothing at {request.path}", "NotFound")

    @app.errorhandler(405)
    def _method(err):
        return problem(405, f"{request.method} is not allowed on {request.path}", "MethodNotAllowed",
                       {"Allow": ", ".join(err.valid_methods or [])})

    @app.errorhandler(413)
    def _too_large(err):
        return problem(413, "the request body is too large", "PayloadTooLarge")

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        """The server-wide guard: werkzeug's own HTTP errors and every exception no route
        expected become problem+json (never an HTML page); the latter are logged with
        their traceback and the request id the body carries."""
        if isinstance(err, HTTPException):
            return problem(err.code or 500, err.description or err.name)
        app.logger.exception("unhandled error", extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "path": request.path}})
        return problem(500, "an unexpected error occurred; it has been logged with this request_id",
                       "ServerError")
