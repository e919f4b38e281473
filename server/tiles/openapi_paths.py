"""OpenAPI path items of the tiles blueprint (merged into the server's document by
`server.openapi`). Self-contained: only `#/components/responses/Problem` is referenced."""

from __future__ import annotations

from .mvt import LAYERS
from .render import DEFAULTS
from .tms import SUPPORTED

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_OBJECT = {"type": "object", "additionalProperties": True}


def _path(name: str, description: str, schema: dict | None = None, enum: list | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or ({"type": "string", "enum": enum} if enum else {"type": "string"})}


def _query(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


RASTER_ID = _path("rasterId", "identifier of a raster (a row of the `rasters` collection)")
TMS_ID = _path("tileMatrixSetId", "tile matrix set", enum=list(SUPPORTED))
TILE = [_path("tileMatrix", "zoom level (tile matrix identifier)", {"type": "string", "pattern": "^[0-9]+$"}),
        _path("tileRow", "row index, from the top", {"type": "integer", "minimum": 0}),
        _path("tileCol", "column index, from the left", {"type": "integer", "minimum": 0})]
STYLE = [
    _query("bidx", "band to render (1-based); metrics rasters hold one metric per band",
           {"type": "integer", "minimum": 1, "default": 1}),
    _query("rescale", "`min,max`: the value range spread over the colormap (default per kind: "
           + "; ".join(f"{k} {'its class values' if v.classes else f'{v.low}..{v.high}'}" for k, v in DEFAULTS.items())
           + ")"),
    _query("colormap", "a rio-tiler colormap name (viridis, terrain, magma, gray, ...) or a JSON object "
           "mapping indices 0-255 to RGBA (default per kind: "
           + ", ".join(f"{k} {v.colormap if isinstance(v.colormap, str) else 'a colour per class'}"
                       for k, v in DEFAULTS.items()) + ")"),
    _query("colormap_name", "alias of `colormap` (TiTiler's name)"),
    _query("hillshade", "shade by the terrain (default on for dtm and dsm)", {"type": "boolean"}),
    _query("v", "the raster version (from TileJSON / tileset links): tiles are immutable under it"),
]
_FORMAT = _query("f", "tile format when the path has no extension", {"type": "string",
                                                                     "enum": ["png", "webp", "jpeg"]})
_ERRORS = {"400": _PROBLEM, "404": _PROBLEM}


def _op(op_id: str, summary: str, responses: dict, parameters: list, tag: str = "tiles") -> dict:
    return {"get": {"operationId": op_id, "summary": summary, "tags": [tag], "parameters": parameters,
                    "responses": {**responses, **_ERRORS}}}


def _json(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _OBJECT}}}


_IMAGE = {"description": "the tile", "headers": {"ETag": {"schema": {"type": "string"}},
                                                  "Cache-Control": {"schema": {"type": "string"}}},
          "content": {m: {"schema": {"type": "string", "format": "binary"}}
                      for m in ("image/png", "image/webp", "image/jpeg")}}
_MVT = {"description": "the vector tile",
        "content": {"application/vnd.mapbox-vector-tile": {"schema": {"type": "string", "format": "binary"}}}}

PATHS: dict[str, dict] = {
    "/tileMatrixSets": _op("getTileMatrixSets", "The tile matrix sets tiles are served in",
                           {"200": _json("tile matrix sets")}, []),
    "/tileMatrixSets/{tileMatrixSetId}": _op("getTileMatrixSet", "A tile matrix set definition",
                                             {"200": _json("OGC 2D Tile Matrix Set")}, [TMS_ID]),
    "/rasters/{rasterId}": _op("getRaster", "A raster: kind, size, bands, bounds and links",
                               {"200": _json("raster description")}, [RASTER_ID]),
    "/rasters/{rasterId}/tiles": _op("getRasterTilesets", "The raster's tilesets (OGC API - Tiles)",
                                     {"200": _json("tileset list")}, [RASTER_ID]),
    "/rasters/{rasterId}/tiles/{tileMatrixSetId}": _op(
        "getRasterTileset", "Tileset metadata with tileMatrixSetLimits",
        {"200": _json("tileset metadata")}, [RASTER_ID, TMS_ID, *STYLE]),
    "/rasters/{rasterId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": _op(
        "getRasterTile", "A map tile of the raster (PNG, WebP or JPEG; also by extension .png/.webp/.jpeg "
        "on tileCol). No data is transparent; a tile outside the tileset's limits is 404.",
        {"200": _IMAGE, "304": {"description": "not modified (If-None-Match)"}},
        [RASTER_ID, TMS_ID, *TILE, *STYLE, _FORMAT]),
    "/rasters/{rasterId}/tilejson.json": _op(
        "getRasterTileJSON", "TileJSON 3.0.0 for web maps; `canopy:style` gives the legend",
        {"200": _json("TileJSON")},
        [RASTER_ID, _query("tileMatrixSetId", "tile matrix set (default WebMercatorQuad)"), _FORMAT, *STYLE]),
    "/rasters/{rasterId}/WMTSCapabilities.xml": _op(
        "getRasterWMTS", "WMTS 1.0.0 capabilities (RESTful) for QGIS and GDAL",
        {"200": {"description": "capabilities", "content": {"application/xml": {"schema": {"type": "string"}}}}},
        [RASTER_ID, _query("tile_format", "tile format of the ResourceURL", {"type": "string",
                                                                              "enum": ["png", "webp", "jpeg"]}),
         *STYLE]),
    "/rasters/{rasterId}/cog": {
        **_op("getRasterCOG", "The Cloud Optimized GeoTIFF itself; HTTP Range (206), ETag, If-None-Match",
              {"200": {"description": "the file", "content": {"image/tiff": {"schema": {
                  "type": "string", "format": "binary"}}}},
               "206": {"description": "the requested byte range"},
               "304": {"description": "not modified"}, "416": {"description": "range not satisfiable"}},
              [RASTER_ID, {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}}]),
    },
    "/rasters/{rasterId}/statistics": _op(
        "getRasterStatistics", "Band statistics and histograms (from an overview of at most 1024 px)",
        {"200": _json("statistics per band")},
        [RASTER_ID, _query("bidx", "comma-separated bands (default all)"),
         _query("bins", "histogram bins", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20})]),
    "/rasters/{rasterId}/point": _op(
        "getRasterPoint", "The value of every band at a point (for map pop-ups); null where no data",
        {"200": _json("values")},
        [RASTER_ID, {**_query("lon", "longitude (CRS84)", {"type": "number"}), "required": True},
         {**_query("lat", "latitude (CRS84)", {"type": "number"}), "required": True}]),
    "/viewer": {"get": {"operationId": "getViewer", "summary": "The web map viewer (HTML)", "tags": ["tiles"],
                        "responses": {"200": {"description": "HTML page",
                                              "content": {"text/html": {"schema": {"type": "string"}}}}}}},
}

for _name, _layer in LAYERS.items():
    _root = f"/collections/{_name}/tiles"
    PATHS[_root] = _op(f"get{_name.title()}Tilesets", f"Vector tilesets of {_name}",
                       {"200": _json("tileset list")}, [])
    PATHS[f"{_root}/{{tileMatrixSetId}}"] = _op(
        f"get{_name.title()}Tileset", f"Vector tileset metadata of {_name}", {"200": _json("tileset")},
        [_path("tileMatrixSetId", "tile matrix set", enum=["WebMercatorQuad"])])
    PATHS[f"{_root}/{{tileMatrixSetId}}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"] = _op(
        f"get{_name.title()}VectorTile",
        f"Mapbox vector tile of {_name} (layer `{_name}`; empty below zoom {_layer.minzoom}: 204)",
        {"200": _MVT, "204": {"description": "no features in this tile"}},
        [_path("tileMatrixSetId", "tile matrix set", enum=["WebMercatorQuad"]), *TILE])
