"""Canopy's layer around pygeoapi's Features routes.

pygeoapi serves `/collections/...`; this module fills what it leaves out:
- the request context its providers read (caller, links, cursor, If-Match);
- strict query parameters (an unknown one is a 400, not silently ignored);
- CQL2 text and JSON filters parsed here (pygeoapi parses ECQL only and refuses
  `filter-lang=cql2-text`), so clients such as QGIS filter on the server;
- `sortby` checked against the collection's properties (pygeoapi's parser fails on empty keys);
- ETag on items, If-Match (428 when missing, 412 when stale), PUT and PATCH answering
  200 with the stored item;
- OPTIONS answering what the caller may do, and 405 for writes to read-only collections;
- `/conformance` listing exactly what is implemented;
- GeoJSON served as `application/geo+json`, and `Accept` honoured on items (pygeoapi knows
  no `application/geo+json` and, given it, takes the next type listed whatever its weight);
- queryables and schemas declaring the JSON Schema dialect by its https URI, as Features
  Part 3 does (pygeoapi writes http);
- HTTP `Link` headers (RFC 8288) on collections, items and items pages: self, alternate,
  next/prev, collection, items, queryables (Features Part 1 recommends them; clients such
  as ogctests look the queryables up there, with a HEAD).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from pygeofilter.parsers.cql2_json import parse as parse_cql2_json
from pygeofilter.parsers.cql2_text import parse as parse_cql2_text
from werkzeug.datastructures import ImmutableMultiDict

from db.runs import ALL, RUN_ID, RUN_TABLES
from providers import context
from providers.postgis import output_srid
from providers.schema import TABLES

from .auth.policy import require_user
from .errors import BadRequest, MethodNotAllowed, NotFound, PreconditionRequired

GEOJSON_TYPES = ("application/geo+json", "application/json")   # bodies with links (JSON-LD has none)
# what items and an item are served as, in the order Accept's ties are settled (`*/*`: GeoJSON)
_SERVED_TYPES = ["application/geo+json", "application/json", "text/html", "application/ld+json"]
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2019-09/schema"


def media_type(response: Response) -> str:
    """The media type a response is sent as, from its header: `response.mimetype` is None
    on the responses pygeoapi builds (it sets the header, not the mimetype)."""
    return (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()

bp = Blueprint("features", __name__)

_ITEMS = re.compile(r"^/collections/(?P<c>[^/]+)/items(?:/(?P<id>[^/]+))?/?$")
_COLLECTION = re.compile(r"^/collections(?:/(?P<c>[^/]+))?/?$")
_SCHEMAS = re.compile(r"^/collections/[^/]+/(?:queryables|schema)/?$")
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
# the encodings each kind of document is served in (f=...), as the body's links list them
_FORMATS = {"items": {"json": "application/geo+json", "jsonld": "application/ld+json", "html": "text/html",
                      "csv": "text/csv"},
            "item": {"json": "application/geo+json", "jsonld": "application/ld+json", "html": "text/html"},
            "collection": {"json": "application/json", "jsonld": "application/ld+json", "html": "text/html"}}
_COMMON_PARAMS = {"f", "lang"}
_ITEMS_PARAMS = {"bbox", "bbox-crs", "crs", "limit", "offset", "datetime", "sortby", "properties",
                 "skipGeometry", "filter", "filter-lang", "filter-crs", "cursor", "resulttype"}
_ITEM_PARAMS = {"crs"}
_QUERY_TYPES = ("application/json", "application/query-cql-json")   # a POSTed CQL2 JSON filter
_WRITES = ("POST", "PUT", "PATCH", "DELETE")
_OURS = ("filter", "filter-lang", "filter-crs", "cursor")             # parsed here, hidden from pygeoapi
_READ_ONLY = "GET, HEAD, OPTIONS"

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/landing-page",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/schemas",
    "http://www.opengis.net/spec/ogcapi-records-1/1.0/conf/sorting",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/arithmetic",
]


@bp.get("/conformance")
def conformance():
    from .jobs.views import CONFORMANCE as PROCESSES
    from .tiles import CONFORMANCE as TILES
    return jsonify(conformsTo=CONFORMANCE + PROCESSES + list(TILES))


def _editable(collection: str) -> bool:
    return collection in TABLES and TABLES[collection].versioned


def _parse_filter(ctx: context.RequestContext) -> None:
    """Parse `filter` per `filter-lang`; a malformed filter is a 400 that says where."""
    text = request.args.get("filter")
    lang = request.args.get("filter-lang", "cql2-text")
    if lang not in ("cql2-text", "cql2-json", "cql-text", "cql-json"):
        raise BadRequest(f"filter-lang must be cql2-text or cql2-json, not {lang!r}")
    if text is None:
        if "filter-lang" in request.args or "filter-crs" in request.args:
            raise BadRequest("filter-lang and filter-crs need a filter")
        return
    try:
        ctx.filter = parse_cql2_json(json.loads(text)) if lang.endswith("json") else parse_cql2_text(text)
    except Exception as err:  # lark and json raise many types; all mean "does not parse"
        reason = str(err).strip().splitlines()[0][:300]
        raise BadRequest(f"the filter is not valid {lang}: {reason}")
    crs = request.args.get("filter-crs")
    if crs:
        class _Spec:  # what output_srid reads
            target_crs_uri = crs
        try:
            ctx.filter_srid, ctx.filter_flip = output_srid(_Spec)
        except Exception:
            raise BadRequest(f"filter-crs {crs!r} is not supported; use CRS84 or an EPSG URI")


@bp.before_app_request
def _features_context():
    ctx = context.RequestContext(principal=g.get("principal"))
    context.current.set(ctx)
    match = _ITEMS.match(request.path)
    if not match:
        return None
    collection, item_id = match.group("c"), match.group("id")
    settings = current_app.config["CANOPY_SETTINGS"]
    ctx.items_url = f"{settings.public_url}/collections/{collection}/items"
    if request.method == "OPTIONS":
        return _options(collection, item_id)
    if request.method in ("GET", "HEAD"):
        _negotiate()
        ctx.json_page = not item_id and _served_as_json()
    if request.method == "GET":
        _check_query(ctx, collection, item_id)
    _check_write(ctx, collection, item_id)
    if request.method == "PUT" and item_id and _editable(collection):
        return write_item(collection, item_id)    # here: pygeoapi's PUT route would win the URL match
    return None


def _negotiate() -> None:
    """Hand pygeoapi the type Accept prefers among those served here, as one it knows
    (GeoJSON as application/json; `_features_headers` labels it). `f` wins over Accept,
    and an export format preferred to these is left to server/exports."""
    from .exports.views import requested_format
    if "f" in request.args or "Accept" not in request.headers or requested_format() is not None:
        return
    best = request.accept_mimetypes.best_match(_SERVED_TYPES, default="application/geo+json")
    request.environ["HTTP_ACCEPT"] = "application/json" if best == "application/geo+json" else best


def _served_as_json() -> bool:
    """Will pygeoapi serve this items request as GeoJSON (after `_negotiate`)? Then the
    provider may hand it each feature still encoded (providers/postgis.py)."""
    from .exports.views import requested_format
    f = request.args.get("f")
    if f is not None:
        return f == "json"
    accept = request.environ.get("HTTP_ACCEPT")
    return (accept is None or accept == "application/json") and requested_format() is None


def _check_query(ctx: context.RequestContext, collection: str, item_id: str | None) -> None:
    """Strict query parameters; the filter, cursor and sortby taken in hand before pygeoapi."""
    allowed = _COMMON_PARAMS | (_ITEM_PARAMS if item_id else _ITEMS_PARAMS)
    if not item_id and collection in TABLES:
        allowed |= set(TABLES[collection].fields)
    if not item_id and collection in RUN_TABLES:
        allowed.add("run")
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; "
                         f"this endpoint accepts: {', '.join(sorted(allowed))}")
    if item_id:
        return
    if "datetime" in request.args:
        _check_datetime(request.args["datetime"])
    _parse_run(ctx)
    _parse_filter(ctx)
    ctx.cursor = request.args.get("cursor")
    ctx.query = request.args.to_dict()              # what the paging links carry on
    if "sortby" in ctx.query and collection in TABLES:
        ctx.query["sortby"] = _parse_sortby(ctx.query["sortby"], collection)
    # pygeoapi must not see what this layer handles (it would re-parse the filter as ECQL)
    request.args = ImmutableMultiDict([(k, ctx.query[k] if k == "sortby" else v)
                                       for k, v in request.args.items(multi=True) if k not in _OURS])


def _parse_run(ctx: context.RequestContext) -> None:
    """`run`: the rows of one run (a job id) or of every run (`all`); without it (or a
    `run_id` property filter) a list shows each scan's current runs (db/runs.py)."""
    run = request.args.get("run", request.args.get("run_id"))
    if run is None:
        return
    if run != ALL and not RUN_ID.fullmatch(run):
        raise BadRequest(f"run must be a job id or {ALL!r}, not {run!r}")
    ctx.run = run


def _parse_sortby(value: str, collection: str) -> str:
    """`sortby` checked against the collection's properties, in the form pygeoapi parses
    (its parser fails on an empty key; a `+` sent unencoded arrives as a space)."""
    fields = TABLES[collection].fields
    keys = []
    for raw in value.split(","):
        key = raw.strip()
        sign, name = (key[0], key[1:]) if key[:1] in ("+", "-") else ("", key)
        if name not in fields:
            raise BadRequest(f"sortby: {name!r} is not a property of {collection}; "
                             f"sort by {', '.join(fields)}, each with an optional + or - before it"
                             if name else "sortby has an empty key: name properties separated by commas")
        keys.append(("-" if sign == "-" else "") + name)
    return ",".join(keys)


def _check_write(ctx: context.RequestContext, collection: str, item_id: str | None) -> None:
    """Writes: 405 on a read-only collection, 415 for a body that is not a Feature, a
    signed-in caller (the provider checks their role) and If-Match on editable items."""
    query = request.method == "POST" and not item_id and request.mimetype in _QUERY_TYPES
    if request.method not in _WRITES or query:
        return
    if collection in TABLES and not _editable(collection):
        raise MethodNotAllowed(f"collection {collection!r} is read-only", headers={"Allow": _READ_ONLY})
    if request.method == "POST" and not item_id and request.mimetype != "application/geo+json":
        raise BadRequest("POST a GeoJSON Feature as application/geo+json to create an item, "
                         "or a CQL2 JSON filter as application/json to query", status=415,
                         code="UnsupportedMediaType")
    require_user()
    if item_id and request.method in ("PUT", "PATCH", "DELETE") and _editable(collection):
        header = request.headers.get("If-Match")
        if not header:
            raise PreconditionRequired("send If-Match with the item's ETag (GET the item to learn it)")
        if header.strip() != "*":
            try:
                ctx.if_match = int(header.strip().removeprefix("W/").strip('"'))
            except ValueError:
                ctx.if_match = -1   # no version matches: the provider answers 412


def _options(collection: str, item_id: str | None) -> Response | None:
    """OPTIONS on items: `Allow` lists what this caller may do there (QGIS offers editing
    when it lists POST, PUT, PATCH and DELETE). An item they may not see is a 404."""
    if collection not in TABLES:
        return None                                  # pygeoapi answers
    methods = _READ_ONLY
    if _editable(collection) and _provider(collection).may_write(item_id):
        methods += ", PUT, PATCH, DELETE" if item_id else ", POST"
    return Response(status=204, headers={"Allow": methods})


def _provider(collection: str):
    """The pygeoapi feature provider serving `collection` (ours: providers.postgis)."""
    from pygeoapi.plugin import load_plugin
    from pygeoapi.util import get_provider_by_type

    resources = current_app.config["PYGEOAPI_CONFIG"]["resources"]
    return load_plugin("provider", get_provider_by_type(resources[collection]["providers"], "feature"))


@bp.after_app_request
def _features_headers(response: Response) -> Response:
    match = _ITEMS.match(request.path)
    if not match:
        collection = _COLLECTION.match(request.path)
        if collection and response.status_code == 200 and request.method in ("GET", "HEAD"):
            response.headers["Link"] = _link_header("collection", collection.group("c"), [], media_type(response))
        elif _SCHEMAS.match(request.path) and response.status_code == 200 \
                and media_type(response) == "application/schema+json":
            body = json.loads(response.get_data())
            body["$schema"] = JSON_SCHEMA_DIALECT
            response.set_data(json.dumps(body))
        return response
    ctx = context.get()
    if response.status_code == 200 and media_type(response) == "application/json":
        response.headers["Content-Type"] = "application/geo+json"    # a Feature or a FeatureCollection
    if response.status_code == 200 and request.method in ("GET", "HEAD"):
        kind = "item" if match.group("id") else "items"
        response.headers["Link"] = _link_header(kind, match.group("c"), ctx.page_links or [],
                                                   media_type(response))
    if ctx.page_links is not None and not any(l["rel"] == "next" for l in ctx.page_links) \
            and response.status_code == 200 and media_type(response) in GEOJSON_TYPES:
        _replace_paging_links(response, ctx.page_links)
    if ctx.version is not None and response.status_code < 300:
        response.headers["ETag"] = f'"{ctx.version}"'
    return response


def _link_header(kind: str, collection: str | None, paging: list[dict], served: str) -> str:
    """The Link header of a document: built from what the request and the provider know,
    never by parsing the body (an items page can be megabytes). Only `rel` and `type`
    are sent as parameters, and commas in URLs are escaped: simple clients split the
    header on "," and ";"."""
    base = current_app.config["CANOPY_SETTINGS"].public_url
    query = {k: v for k, v in request.args.items() if k != "f"}
    formats = _FORMATS[kind]
    here = next((f for f, mime in formats.items() if mime == served), request.args.get("f", "json"))
    links = [("self" if f == here else "alternate", mime,
              f"{base}{request.path}?{urlencode({**query, 'f': f})}") for f, mime in formats.items()]
    links += [(l["rel"], l.get("type", "application/geo+json"), l["href"]) for l in paging]
    if collection:
        links += [("collection" if kind != "collection" else "items",
                   "application/json" if kind != "collection" else "application/geo+json",
                   f"{base}/collections/{collection}" + ("/items" if kind == "collection" else "")),
                  (QUERYABLES_REL, "application/schema+json", f"{base}/collections/{collection}/queryables")]
    return ", ".join(f'<{href.replace(",", "%2C")}>; rel="{rel}"; type="{mime}"' for rel, mime, href in links)


def _replace_paging_links(response: Response, links: list[dict]) -> None:
    """On a last page pygeoapi adds offset links of its own (it keeps a provider's links
    only when they include `next`); put back the provider's."""
    body = json.loads(response.get_data())
    body["links"] = [l for l in body.get("links", []) if l.get("rel") not in ("next", "prev")] + links
    response.set_data(json.dumps(body))


def _check_datetime(value: str) -> None:
    for part in value.split("/"):
        if part in ("", "..") and "/" in value:
            continue
        try:
            datetime.fromisoformat(part.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"datetime {value!r} is not an RFC 3339 instant or interval "
                             "(e.g. 2024-06-01T00:00:00Z/..)")


@bp.route("/collections/<collection>/items/<item_id>", methods=["PUT", "PATCH"])
def write_item(collection: str, item_id: str):
    """Features Part 4 replace (PUT) and update (PATCH, a JSON merge patch; pygeoapi 0.21 has
    no PATCH route). Both answer 200 with the item as now stored and its new ETag, so a
    client keeps editing without another GET. A read-only collection was answered 405
    before (`_check_write`)."""
    if collection not in current_app.config["PYGEOAPI_CONFIG"]["resources"]:
        raise NotFound(f"no collection {collection!r}")
    provider = _provider(collection)
    write = provider.update if request.method == "PUT" else provider.patch
    write(item_id, request.get_data())          # its errors: errors.py's table
    stored = provider.get(item_id)              # sets the ETag's version (the one just written)
    return Response(json.dumps(stored), status=200, content_type="application/geo+json")


def register(app: Flask) -> None:
    app.register_blueprint(bp)
