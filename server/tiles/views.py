"""HTTP routes of raster tiles, TileJSON, WMTS, COG download, statistics, point values,
vector tiles and the viewer. Every raster route looks the raster up through
`catalog.get_raster`, which applies the access policy (invisible = 404)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from flask import Blueprint, Response, current_app, g, json, request, send_from_directory

from ..errors import BadRequest, NotFound
from . import cache, catalog, cog, metadata, mvt, render, tiler, wmts
from . import tms as tms_mod
from .datasets import dataset

STATIC = Path(__file__).resolve().parent.parent / "static"
bp = Blueprint("tiles", __name__)
_IMMUTABLE = "max-age=31536000, immutable"


def _settings():
    return current_app.config["CANOPY_SETTINGS"]


def _json(doc: dict, raster: catalog.Raster | None = None, media: str = "application/json") -> Response:
    response = Response(json.dumps(doc), mimetype=media)
    response.headers["Cache-Control"] = _scope(raster) + ", no-cache"
    return response


def _scope(raster: catalog.Raster | None) -> str:
    return "public" if raster is None or raster.public else "private"


def _not_modified(etag: str, cache_control: str) -> Response | None:
    if etag in request.if_none_match:
        response = Response(status=304)
        response.set_etag(etag)
        response.headers["Cache-Control"] = cache_control
        return response
    return None


# --- tile matrix sets -----------------------------------------------------------------

@bp.get("/tileMatrixSets")
def tile_matrix_sets():
    return _json(tms_mod.tms_list(catalog.base_url()))


@bp.get("/tileMatrixSets/<tms_id>")
def tile_matrix_set(tms_id: str):
    return _json(tms_mod.tms_document(tms_id, catalog.base_url()))


# --- rasters --------------------------------------------------------------------------

@bp.get("/rasters/<id:raster_id>")
def raster_info(raster_id: int):
    raster = catalog.get_raster(raster_id)
    base = catalog.base_url()
    root = f"{base}/rasters/{raster.id}"
    with dataset(raster.path, raster.version, tms_mod.get_tms("WebMercatorQuad")) as entry:
        doc = {"id": str(raster.id), "kind": raster.kind, "project_id": str(raster.project_id),
               "resolution_m": raster.resolution_m, "crs_epsg": raster.crs_epsg, "bands": raster.bands,
               "bbox": list(tiler.geographic_bounds(entry)), "size_bytes": raster.size,
               "version": raster.version, **tiler.describe(entry)}
    doc["links"] = [
        {"rel": "self", "type": "application/json", "href": root},
        {"rel": "alternate", "type": "application/geo+json", "title": "as a feature",
         "href": f"{base}/collections/rasters/items/{raster.id}"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-map", "type": "application/json",
         "href": f"{root}/tiles"},
        {"rel": "enclosure", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
         "href": f"{root}/cog"},
        {"rel": "describedby", "type": "application/json", "href": f"{root}/tilejson.json",
         "title": "TileJSON"},
        {"rel": "describedby", "type": "application/xml", "href": f"{root}/WMTSCapabilities.xml",
         "title": "WMTS capabilities"},
        {"rel": "http://www.opengis.net/def/rel/ogc/1.0/statistics", "type": "application/json",
         "href": f"{root}/statistics"},
    ]
    return _json(doc, raster)


@bp.get("/rasters/<id:raster_id>/tiles")
def raster_tilesets(raster_id: int):
    raster = catalog.get_raster(raster_id)
    return _json(metadata.tileset_list(catalog.base_url(), raster), raster)


@bp.get("/rasters/<id:raster_id>/tiles/<tms_id>")
def raster_tileset(raster_id: int, tms_id: str):
    raster = catalog.get_raster(raster_id)
    tms = tms_mod.get_tms(tms_id)
    render.parse_style(request.args, raster.kind)       # 400 on a bad style before linking it
    query = metadata.style_query(request.args.to_dict(), raster)
    with dataset(raster.path, raster.version, tms) as entry:
        doc = metadata.tileset(catalog.base_url(), raster, entry, query)
    return _json(doc, raster)


@bp.get("/rasters/<id:raster_id>/tiles/<tms_id>/<z>/<y>/<x>")
def raster_tile(raster_id: int, tms_id: str, z: str, y: str, x: str):
    raster = catalog.get_raster(raster_id)
    tms = tms_mod.get_tms(tms_id)
    x, _, ext = x.partition(".")
    zi, yi, xi = tms_mod.parse_tile(tms, z, y, x)
    fmt = render.parse_format(request.args.get("f"), ext or None)
    style = render.parse_style(request.args, raster.kind)
    etag = hashlib.blake2b(f"{raster.id}|{raster.version}|{tms.id}|{zi}/{yi}/{xi}|{fmt}|{style.key()}"
                           .encode(), digest_size=16).hexdigest()
    fresh = request.args.get("v") == raster.version
    cache_control = f"{_scope(raster)}, " + (_IMMUTABLE if fresh else "no-cache")
    unchanged = _not_modified(etag, cache_control)
    if unchanged is not None:
        return unchanged
    redis_url = _settings().redis_url
    body = cache.get(redis_url, etag)
    if body is None:
        with dataset(raster.path, raster.version, tms) as entry:
            body = tiler.tile(entry, raster.kind, zi, yi, xi, style, fmt)
        cache.put(redis_url, etag, body)
    response = Response(body, mimetype=render.FORMATS[fmt])
    response.set_etag(etag)
    response.headers["Cache-Control"] = cache_control
    if not raster.public:
        response.headers["Vary"] = "Authorization, Cookie"
    return response


@bp.get("/rasters/<id:raster_id>/tilejson.json")
def raster_tilejson(raster_id: int):
    raster = catalog.get_raster(raster_id)
    tms = tms_mod.get_tms(request.args.get("tileMatrixSetId", "WebMercatorQuad"))
    fmt = render.parse_format(request.args.get("f") or request.args.get("tile_format"), None)
    style = render.parse_style(request.args, raster.kind)
    args = {k: v for k, v in request.args.items() if k not in ("tileMatrixSetId", "f", "tile_format")}
    query = metadata.style_query(args, raster)
    with dataset(raster.path, raster.version, tms) as entry:
        tiler.tile_limits(entry)
        if style.bidx > entry.reader.dataset.count:
            raise BadRequest(f"bidx {style.bidx} is out of range: this raster has "
                             f"{entry.reader.dataset.count} band(s)")
        rescale = style.rescale or render.default_rescale(raster.kind, tiler.band_stats(entry, style.bidx))
        info = {"kind": raster.kind, "bidx": style.bidx, "rescale": list(rescale),
                "colormap": style.colormap if isinstance(style.colormap, str) else "custom",
                "hillshade": style.hillshade, **render.legend(style, raster.kind)}
        doc = metadata.tilejson(catalog.base_url(), raster, entry, query, fmt, info)
    return _json(doc, raster)


@bp.get("/rasters/<id:raster_id>/WMTSCapabilities.xml")
def raster_wmts(raster_id: int):
    raster = catalog.get_raster(raster_id)
    render.parse_style(request.args, raster.kind)
    fmt = render.parse_format(request.args.get("tile_format"), None)
    query = metadata.style_query(request.args.to_dict(), raster)
    found, bounds = {}, None
    for tms_id in tms_mod.SUPPORTED:
        with dataset(raster.path, raster.version, tms_mod.get_tms(tms_id)) as entry:
            found[tms_id] = tiler.tile_limits(entry)
            bounds = bounds or tiler.geographic_bounds(entry)
    xml = wmts.capabilities(catalog.base_url(), raster, bounds, found, query, fmt, render.FORMATS[fmt])
    response = Response(xml, mimetype="application/xml")
    response.headers["Cache-Control"] = _scope(raster) + ", no-cache"
    return response


@bp.route("/rasters/<id:raster_id>/cog", methods=["GET", "HEAD"])
def raster_cog(raster_id: int):
    return cog.cog_response(catalog.get_raster(raster_id))


@bp.get("/rasters/<id:raster_id>/statistics")
def raster_statistics(raster_id: int):
    raster = catalog.get_raster(raster_id)
    raw = request.args.get("bidx", "")
    try:
        bidx = [int(b) for b in raw.split(",")] if raw else None
        bins = int(request.args.get("bins", "20"))
    except ValueError:
        raise BadRequest("bidx must be band numbers separated by commas and bins an integer") from None
    if not 1 <= bins <= 1000 or (bidx and min(bidx) < 1):
        raise BadRequest("bins must be within 1..1000 and band numbers start at 1")
    with dataset(raster.path, raster.version, tms_mod.get_tms("WebMercatorQuad")) as entry:
        bidx = bidx or list(range(1, entry.reader.dataset.count + 1))
        doc = {"raster": str(raster.id), "kind": raster.kind, "bands": tiler.statistics(entry, bidx, bins)}
    return _json(doc, raster)


@bp.get("/rasters/<id:raster_id>/point")
def raster_point(raster_id: int):
    raster = catalog.get_raster(raster_id)
    lon, lat = tiler.parse_lonlat(request.args.get("lon"), request.args.get("lat"))
    with dataset(raster.path, raster.version, tms_mod.get_tms("WebMercatorQuad")) as entry:
        values = tiler.point(entry, lon, lat)
        names = [d or f"b{i + 1}" for i, d in enumerate(entry.reader.dataset.descriptions)]
    return _json({"raster": str(raster.id), "kind": raster.kind, "coordinates": [lon, lat],
                  "values": values, "band_names": names}, raster)


# --- vector tiles -----------------------------------------------------------------------
# `<path:collection>` like pygeoapi's own rules: with equal converters the rule registered
# first wins, and this blueprint is registered before pygeoapi's (a plain converter loses
# to a path converter in werkzeug's matcher).

@bp.get("/collections/<path:collection>/tiles")
def vector_tilesets(collection: str):
    spec = mvt.layer(collection)
    base = catalog.base_url()
    root = f"{base}/collections/{collection}/tiles"
    return _json({"tilesets": [{
        "title": f"{spec.title} (vector tiles)", "dataType": "vector",
        "crs": tms_mod.crs_uri(tms_mod.get_tms("WebMercatorQuad")),
        "tileMatrixSetURI": str(tms_mod.get_tms("WebMercatorQuad").uri),
        "links": [{"rel": "self", "type": "application/json", "href": f"{root}/WebMercatorQuad"},
                  {"rel": metadata.TILING_SCHEME, "type": "application/json",
                   "href": f"{base}/tileMatrixSets/WebMercatorQuad"}]}],
        "links": [{"rel": "self", "type": "application/json", "href": root}]})


def _vector_tms(tms_id: str):
    tms = tms_mod.get_tms(tms_id)
    if tms.id != "WebMercatorQuad":
        raise NotFound("vector tiles are served in WebMercatorQuad only")
    return tms


@bp.get("/collections/<path:collection>/tiles/<tms_id>")
def vector_tileset(collection: str, tms_id: str):
    spec = mvt.layer(collection)
    tms = _vector_tms(tms_id)
    base = catalog.base_url()
    root = f"{base}/collections/{collection}/tiles/{tms.id}"
    return _json({
        "title": f"{spec.title} (vector tiles)", "dataType": "vector",
        "crs": tms_mod.crs_uri(tms), "tileMatrixSetURI": str(tms.uri),
        "layers": [{"id": collection, "title": spec.title, "dataType": "vector",
                    "minTileMatrix": str(spec.minzoom), "maxTileMatrix": str(tms.maxzoom)}],
        "links": [{"rel": "self", "type": "application/json", "href": root},
                  {"rel": metadata.TILING_SCHEME, "type": "application/json",
                   "href": f"{base}/tileMatrixSets/{tms.id}"},
                  {"rel": "item", "type": "application/vnd.mapbox-vector-tile", "templated": True,
                   "href": f"{root}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}.mvt"}]})


@bp.get("/collections/<path:collection>/tiles/<tms_id>/<z>/<y>/<x>")
def vector_tile(collection: str, tms_id: str, z: str, y: str, x: str):
    mvt.layer(collection)
    tms = _vector_tms(tms_id)
    x, _, ext = x.partition(".")
    fmt = (ext or request.args.get("f") or "mvt").lower()
    if fmt not in ("mvt", "pbf"):
        raise BadRequest(f"vector tiles are served as mvt, not {fmt!r}")
    zi, yi, xi = tms_mod.parse_tile(tms, z, y, x)
    body = mvt.tile(_settings().database_url, collection, g.get("principal"), zi, yi, xi)
    etag = hashlib.blake2b(body, digest_size=16).hexdigest()
    cache_control = "private, no-cache"
    unchanged = _not_modified(etag, cache_control)
    if unchanged is not None:
        return unchanged
    response = Response(body, status=200 if body else 204,
                        mimetype="application/vnd.mapbox-vector-tile")
    response.set_etag(etag)
    response.headers["Cache-Control"] = cache_control
    response.headers["Vary"] = "Authorization, Cookie"
    return response


# --- viewer -------------------------------------------------------------------------------

@bp.get("/viewer")
def viewer():
    index = STATIC / "viewer" / "index.html"
    if not index.exists():
        raise NotFound("the viewer is not built: run `make web` (npm) to bundle it")
    return send_from_directory(STATIC / "viewer", "index.html", max_age=0)


@bp.get("/viewer/<path:name>")
def viewer_asset(name: str):
    return send_from_directory(STATIC / "viewer", name, max_age=3600)
