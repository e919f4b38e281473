"""Documents describing a raster's tiles: OGC API - Tiles tileset lists and tileset
metadata (with tileMatrixSetLimits) and TileJSON 3.0.0 for web maps."""

from __future__ import annotations

from urllib.parse import urlencode

from .catalog import Raster
from .datasets import OpenDataset
from . import tiler, tms as tms_mod

TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
_TILES = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"
# what /conformance should add for these routes
CONFORMANCE = [_TILES + c for c in ("core", "tileset", "tilesets-list", "geodata-tilesets",
                                    "png", "jpeg", "mvt")] + [
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset"]
_TYPES = (("png", "image/png"), ("webp", "image/webp"), ("jpeg", "image/jpeg"))


def style_query(args: dict[str, str], raster: Raster) -> str:
    """The style parameters of a request, plus the raster's version (tiles under a URL that
    carries `v=` are immutable), as a query string for tile URL templates."""
    keep = {k: v for k, v in args.items() if k in ("bidx", "rescale", "colormap", "colormap_name",
                                                   "hillshade")}
    keep["v"] = raster.version
    return urlencode(keep)


def tileset_list(base: str, raster: Raster) -> dict:
    root = f"{base}/rasters/{raster.id}/tiles"
    return {
        "tilesets": [{
            "title": f"raster {raster.id} ({raster.kind}) in {name}", "dataType": "map",
            "crs": tms_mod.crs_uri(tms_mod.get_tms(name)),
            "tileMatrixSetURI": str(tms_mod.get_tms(name).uri),
            "links": [{"rel": "self", "type": "application/json", "href": f"{root}/{name}"},
                      {"rel": TILING_SCHEME, "type": "application/json",
                       "href": f"{base}/tileMatrixSets/{name}"}],
        } for name in tms_mod.SUPPORTED],
        "links": [{"rel": "self", "type": "application/json", "href": root}],
    }


def tileset(base: str, raster: Raster, entry: OpenDataset, query: str) -> dict:
    tms = entry.reader.tms
    root = f"{base}/rasters/{raster.id}/tiles/{tms.id}"
    west, south, east, north = tiler.geographic_bounds(entry)
    return {
        "title": f"raster {raster.id} ({raster.kind})",
        "dataType": "map",
        "crs": tms_mod.crs_uri(tms),
        "tileMatrixSetURI": str(tms.uri),
        "boundingBox": {"lowerLeft": [west, south], "upperRight": [east, north],
                        "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"},
        "tileMatrixSetLimits": [limit.as_ogc() for limit in tiler.tile_limits(entry)],
        "links": [
            {"rel": "self", "type": "application/json", "href": root},
            {"rel": TILING_SCHEME, "type": "application/json", "href": f"{base}/tileMatrixSets/{tms.id}"},
            *({"rel": "item", "type": media, "templated": True,
               "href": f"{root}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}.{ext}?{query}"} for ext, media in _TYPES),
        ],
    }


def tilejson(base: str, raster: Raster, entry: OpenDataset, query: str, fmt: str,
             style_info: dict) -> dict:
    tms = entry.reader.tms
    minzoom, maxzoom = tiler.zoom_range(entry)
    bounds = tiler.geographic_bounds(entry)
    lon, lat = tms_mod.center(bounds)
    return {
        "tilejson": "3.0.0",
        "name": f"raster {raster.id} ({raster.kind})",
        "scheme": "xyz",
        "tiles": [f"{base}/rasters/{raster.id}/tiles/{tms.id}/{{z}}/{{y}}/{{x}}.{fmt}?{query}"],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": list(bounds),
        "center": [lon, lat, min(maxzoom, max(minzoom, entry.reader.maxzoom - 2))],
        "attribution": "Canopy",
        "canopy:style": style_info,      # what the legend needs: kind, band, rescale, colormap
    }
