"""What a request's URL and JSON body may hold, checked once for every route before it runs.

- Text never carries control characters (U+0000–U+001F but tab, line feed and carriage
  return; U+007F–U+009F) nor lone UTF-16 surrogates (JSON's "\ud800" decodes to one, and
  so do the raw bytes ED A0 80): PostgreSQL cannot store NUL or a surrogate, and no name,
  id, filter or value of ours has them. A path holding any control character (tab, line
  feed and carriage return included) names nothing (404); a query parameter or a string
  anywhere in a JSON body is a 400. Checking here covers every place text goes on to
  PostgreSQL (login, users, projects, tokens, feature properties, property filters,
  CQL2, process inputs) with one rule.
- Row ids in Canopy's URLs are ASCII integers: the `<id:…>` converter (werkzeug's `int`
  matches any Unicode digit, e.g. "١"); pygeoapi's item routes go through the
  provider's `parse_id`, the same rule.
- `f`, `lang`, `ui` and the queryables' `profile` take only the values the route serves; an unknown or empty one
  is a 400 like any other unknown value.
- A request body is at most CANOPY_MAX_BODY_BYTES (16 MiB: a plot, a filter, an execute
  request; 413 beyond), except tus uploads, bounded by CANOPY_UPLOAD_MAX_BYTES and the
  quota. A JSON body nests at most MAX_JSON_DEPTH (64) levels and holds no NaN or
  Infinity (not JSON; PostgreSQL's jsonb refuses them): both are 400s.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask, current_app, request
from werkzeug import exceptions as werkzeug_exceptions
from werkzeug.routing import BaseConverter

from providers.schema import ID_PATTERN, parse_id

from .errors import BadRequest, NotFound

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_PATH_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")     # a path holds not even tab, LF or CR
_SURROGATE = re.compile(r"[\ud800-\udfff]")              # half of a UTF-16 pair: not a character
ROW_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}   # providers.schema.parse_id, as a JSON Schema
# the same rule as JSON Schema patterns (OpenAPI): any text, and text that is not blank (names)
_TEXT_CHAR = f"[^{_CONTROL.pattern[1:-1]}]"
TEXT_PATTERN = f"^{_TEXT_CHAR}*$"
NAME_PATTERN = f"^{_TEXT_CHAR}*[^{_CONTROL.pattern[1:-1]}\\s]{_TEXT_CHAR}*$"
_JSON_TYPES = ("application/json", "application/geo+json", "application/query-cql-json",
               "application/merge-patch+json")
_PYGEOAPI_FORMATS = {"json", "html", "jsonld"}   # what pygeoapi renders on all its routes
_EXPORT_FORMATS = {"csv", "gpkg", "shp", "fgb"}   # server/exports, on items only
_UIS = {"swagger", "redoc"}                      # pygeoapi's OpenAPI pages
_QUERYABLES_PROFILES = {"actual-domain", "valid-domain"}   # pygeoapi's queryables (its OpenAPI enum)


def control_character(text: str) -> str | None:
    """The first control character in `text` as U+XXXX, or None when it has none."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def check_text(text: str, what: str) -> str:
    """`text` unchanged; a 400 naming `what` if it holds a control character or a lone surrogate."""
    char = control_character(text)
    if char is not None:
        raise BadRequest(f"{what} contains the control character {char}; text may not hold any")
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        raise BadRequest(f"{what} contains the lone surrogate U+{ord(surrogate.group()):04X}, which is not a "
                         "character; send valid Unicode text")
    return text


def check_query(accepted: set[str]) -> None:
    """A 400 naming the query parameters of the request that the endpoint does not take."""
    unknown = sorted(set(request.args) - accepted)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; this endpoint accepts: "
                         f"{', '.join(sorted(accepted))}")


def check_json(value: Any, what: str = "the body") -> None:
    """Every key and string of a decoded JSON document, checked with `check_text`."""
    stack = [(value, what)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            check_text(item, where)
        elif isinstance(item, dict):
            for key, member in item.items():
                check_text(key, f"a member name in {what}")
                stack.append((member, f"{what}: member {key!r}"))
        elif isinstance(item, list):
            stack.extend((member, where) for member in item)


class IdConverter(BaseConverter):
    """`<id:name>`: a row id in ASCII digits, given to the view as an int."""

    regex = ID_PATTERN

    def to_python(self, value: str) -> int:
        try:
            return parse_id(value)
        except ValueError:
            # digits that are no row id (0, beyond a bigint) name nothing: a 404, where a
            # ValidationError would let werkzeug try the other routes and answer 405
            raise werkzeug_exceptions.NotFound(f"{value} is not a row id") from None

    def to_url(self, value: Any) -> str:
        return str(int(value))


def _check_url() -> None:
    if _PATH_CONTROL.search(request.path):
        raise NotFound(f"nothing at {request.path!r}: a path holds no control characters")
    for name, value in request.args.items(multi=True):
        check_text(name, "a query parameter name")
        check_text(value, f"query parameter {name!r}")


def _formats() -> set[str] | None:
    """Values of `f` the matched route serves; None where the route checks them itself."""
    if request.blueprint == "tiles":
        return None                          # tiles pick png/webp/jpeg/mvt and refuse others
    if request.blueprint == "pygeoapi":
        items = request.endpoint == "pygeoapi.collection_items"
        return _PYGEOAPI_FORMATS | (_EXPORT_FORMATS if items else set())
    if request.endpoint == "area_models.get_model":
        return {"json", "html"}              # the model's page (server/area_models/views.py)
    if request.endpoint == "jobs.list_jobs":
        return {"json", "html", "jsonld"}    # pygeoapi's HTML page (server/pages/jobs_html.py) asks for jsonld
    return {"json"}                          # Canopy's own routes answer JSON only


def _one_of(name: str, allowed: set[str] | None) -> None:
    value = request.args.get(name)
    if value is None:
        return
    if value == "" or (allowed is not None and value not in allowed):
        choices = f"; use {', '.join(sorted(allowed))}" if allowed else "; leave it out for the default"
        raise BadRequest(f"{name}={value!r} is not served here{choices}")


def _check_enumerations() -> None:
    _one_of("f", _formats())
    _one_of("lang", set(current_app.config["PYGEOAPI_CONFIG"]["server"].get("languages", [])))
    if request.endpoint == "pygeoapi.openapi":
        _one_of("ui", _UIS)
    if request.endpoint == "pygeoapi.collection_queryables":
        _one_of("profile", _QUERYABLES_PROFILES)


MAX_JSON_DEPTH = 64


def _not_json(constant: str) -> None:
    raise BadRequest(f"{constant} is not a JSON number; send a finite number or null")


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded document (a scalar is 0)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((member, depth) for member in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_json_body() -> None:
    if not request.is_json and request.mimetype not in _JSON_TYPES:   # is_json: what get_json() reads
        return
    raw = request.get_data(cache=True)       # cached: the route reads the same bytes
    if not raw:
        return
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise BadRequest(f"the JSON body nests too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError:
        return                               # not JSON at all: the route says what it expected
    if json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(f"the JSON body nests too deeply (at most {MAX_JSON_DEPTH} levels)")
    check_json(body)


def _limit_body() -> None:
    """The body cap of this request (werkzeug answers 413 past it); tus uploads are
    bounded by their own limits (server/uploads)."""
    if request.blueprint != "uploads":
        request.max_content_length = current_app.config["CANOPY_SETTINGS"].max_body_bytes


def check_request() -> None:
    """Every rule of this module, for the request being served."""
    _limit_body()
    _check_url()
    if request.url_rule is not None:         # an unknown route is a 404, whatever its query
        _check_enumerations()
    _check_json_body()


def register(app: Flask) -> None:
    """The `id` converter (before any route is added) and the checks (before any route runs)."""
    app.url_map.converters["id"] = IdConverter
    app.before_request(check_request)
