"""Cross-origin requests (CORS): which web pages on other origins may read Canopy's answers.

- By default (`CANOPY_CORS_ORIGINS` unset) any origin may make anonymous reads:
  GET/HEAD/OPTIONS without `Authorization` are answered `Access-Control-Allow-Origin: *`
  (no credentials), as TiTiler and pygeoapi do; a request with a token is not. An anonymous caller only ever sees public
  resources (tiles, TileJSON, WMTS, COGs, Features, process descriptions), which anyone
  could fetch with curl, so a web map on any origin works unconfigured.
- `CANOPY_CORS_ORIGINS` (comma-separated exact origins, e.g. `https://maps.example.org`)
  replaces that default: those origins, and only they, may do everything a signed-in
  client does (writes, tokens, tus uploads); the answer echoes the origin with
  `Access-Control-Allow-Credentials: true` and `Vary: Origin`.
- Preflights (OPTIONS with `Access-Control-Request-Method`) are answered here, before any
  view, with 204, so they never depend on the route existing or on who may see it.
- Every header a client reads is exposed (`Access-Control-Expose-Headers`).
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request

_READS = ("GET", "HEAD", "OPTIONS")
_WRITES = ("POST", "PUT", "PATCH", "DELETE")
# request headers a page may send: anonymously (no Authorization), and from a configured origin
_READ_HEADERS = ("Accept", "Accept-Language", "Content-Language", "Content-Type", "Range",
                 "If-None-Match", "If-Modified-Since", "X-Request-Id")
_ALL_HEADERS = _READ_HEADERS + ("Authorization", "If-Match", "Prefer", "Tus-Resumable", "Upload-Length",
                                "Upload-Offset", "Upload-Metadata", "Upload-Checksum",
                                "Upload-Defer-Length", "Upload-Concat", "X-HTTP-Method-Override",
                                "X-Requested-With")
EXPOSED = ("Canopy-Scan", "Canopy-Job", "Canopy-Duplicate", "Canopy-Warnings", "Location", "ETag", "Link", "Content-Crs",
           "Content-Range", "Content-Disposition", "Accept-Ranges", "Allow", "Retry-After",
           "Preference-Applied", "X-Request-Id", "Upload-Offset", "Upload-Length", "Upload-Metadata",
           "Upload-Expires", "Tus-Resumable", "Tus-Version", "Tus-Max-Size", "Tus-Extension",
           "Tus-Checksum-Algorithm")
_MAX_AGE = "3600"


def _allowed_origin(origin: str | None, anonymous_read: bool) -> str | None:
    """What `Access-Control-Allow-Origin` says: the origin itself when it is configured,
    `*` for an anonymous read when none is (sent with or without `Origin`, so a shared
    cache never keeps a copy without it), else nothing."""
    configured = current_app.config["CANOPY_SETTINGS"].cors_origins
    if configured:
        return origin if origin in configured else None
    return "*" if anonymous_read else None


def _preflight() -> Response | None:
    origin = request.headers.get("Origin")
    if request.method != "OPTIONS" or not origin or "Access-Control-Request-Method" not in request.headers:
        return None
    response = Response(status=204)
    allowed = _allowed_origin(origin, anonymous_read=True)
    if allowed is not None:
        credentials = allowed != "*"
        response.headers.update({
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ", ".join(_READS + (_WRITES if credentials else ())),
            "Access-Control-Allow-Headers": ", ".join(_ALL_HEADERS if credentials else _READ_HEADERS),
            "Access-Control-Max-Age": _MAX_AGE})
        if credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"
    return response


def _headers(response: Response) -> Response:
    if current_app.config["CANOPY_SETTINGS"].cors_origins:
        response.vary.add("Origin")
    if "Access-Control-Allow-Origin" in response.headers:      # a preflight's answer
        return response
    anonymous_read = request.method in _READS and "Authorization" not in request.headers
    allowed = _allowed_origin(request.headers.get("Origin"), anonymous_read)
    if allowed is not None:
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED)
        if allowed != "*":
            response.headers["Access-Control-Allow-Credentials"] = "true"
    return response


def register(app: Flask) -> None:
    """Preflights answered before any other check; CORS headers on every answer, errors included."""
    app.before_request(_preflight)
    app.after_request(_headers)
