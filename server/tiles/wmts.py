"""WMTS 1.0.0 capabilities (RESTful encoding) of one raster, for QGIS and GDAL's WMTS driver.

Written out by hand: no installed library emits WMTS capabilities (OWSLib only parses
them). Tile matrices come from morecantile; the tiles themselves are the OGC API - Tiles
URLs, which WMTS RESTful templates express directly.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

import morecantile

from .catalog import Raster
from . import tms as tms_mod

_WMTS_CRS = {"WebMercatorQuad": "urn:ogc:def:crs:EPSG::3857",
             "WorldCRS84Quad": "urn:ogc:def:crs:OGC:1.3:CRS84"}
_WELL_KNOWN = {"WebMercatorQuad": "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible",
               "WorldCRS84Quad": "urn:ogc:def:wkss:OGC:1.0:GoogleCRS84Quad"}


def _matrix_set(tms: morecantile.TileMatrixSet, maxzoom: int) -> str:
    matrices = []
    for z in range(0, maxzoom + 1):
        m = tms.matrix(z)
        x0, y0 = m.pointOfOrigin
        matrices.append(
            f"<TileMatrix><ows:Identifier>{z}</ows:Identifier>"
            f"<ScaleDenominator>{m.scaleDenominator!r}</ScaleDenominator>"
            f"<TopLeftCorner>{x0!r} {y0!r}</TopLeftCorner>"
            f"<TileWidth>{m.tileWidth}</TileWidth><TileHeight>{m.tileHeight}</TileHeight>"
            f"<MatrixWidth>{m.matrixWidth}</MatrixWidth><MatrixHeight>{m.matrixHeight}</MatrixHeight>"
            "</TileMatrix>")
    return (f"<TileMatrixSet><ows:Identifier>{tms.id}</ows:Identifier>"
            f"<ows:SupportedCRS>{_WMTS_CRS[tms.id]}</ows:SupportedCRS>"
            f"<WellKnownScaleSet>{_WELL_KNOWN[tms.id]}</WellKnownScaleSet>"
            + "".join(matrices) + "</TileMatrixSet>")


def capabilities(base: str, raster: Raster, bounds: tuple[float, float, float, float],
                 limits: dict[str, list[tms_mod.Limit]], query: str, ext: str, media: str) -> str:
    """The capabilities document; `limits` maps each tile matrix set id to its tile ranges.

    One tile format per document (`ext`, `media`): OWSLib picks a layer's ResourceURL at
    random whatever format is asked for, so offering several would mix formats."""
    west, south, east, north = bounds
    self_url = f"{base}/rasters/{raster.id}/WMTSCapabilities.xml"
    tiles = f"{base}/rasters/{raster.id}/tiles"
    links = "".join(
        f"<TileMatrixSetLink><TileMatrixSet>{tms_id}</TileMatrixSet><TileMatrixSetLimits>"
        + "".join(f"<TileMatrixLimits><TileMatrix>{lim.z}</TileMatrix><MinTileRow>{lim.min_row}</MinTileRow>"
                  f"<MaxTileRow>{lim.max_row}</MaxTileRow><MinTileCol>{lim.min_col}</MinTileCol>"
                  f"<MaxTileCol>{lim.max_col}</MaxTileCol></TileMatrixLimits>" for lim in found)
        + "</TileMatrixSetLimits></TileMatrixSetLink>" for tms_id, found in limits.items())
    resources = (f"<ResourceURL format=\"{media}\" resourceType=\"tile\" template="
                 + quoteattr(f"{tiles}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.{ext}?{query}")
                 + "/>")
    matrix_sets = "".join(_matrix_set(tms_mod.get_tms(tms_id), found[-1].z) for tms_id, found in limits.items())
    title = escape(f"Canopy raster {raster.id} ({raster.kind})")
    get = lambda href: (f"<ows:DCP><ows:HTTP><ows:Get xlink:href={quoteattr(href)}><ows:Constraint "  # noqa: E731
                        "name=\"GetEncoding\"><ows:AllowedValues><ows:Value>RESTful</ows:Value>"
                        "</ows:AllowedValues></ows:Constraint></ows:Get></ows:HTTP></ows:DCP>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.opengis.net/wmts/1.0 '
        'http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd" version="1.0.0">'
        f"<ows:ServiceIdentification><ows:Title>{title}</ows:Title>"
        "<ows:ServiceType>OGC WMTS</ows:ServiceType><ows:ServiceTypeVersion>1.0.0</ows:ServiceTypeVersion>"
        "</ows:ServiceIdentification>"
        "<ows:OperationsMetadata>"
        f"<ows:Operation name=\"GetCapabilities\">{get(self_url)}</ows:Operation>"
        f"<ows:Operation name=\"GetTile\">{get(tiles + '/')}</ows:Operation>"
        "</ows:OperationsMetadata>"
        "<Contents><Layer>"
        f"<ows:Title>{title}</ows:Title>"
        "<ows:WGS84BoundingBox crs=\"urn:ogc:def:crs:OGC:2:84\">"
        f"<ows:LowerCorner>{west!r} {south!r}</ows:LowerCorner><ows:UpperCorner>{east!r} {north!r}</ows:UpperCorner>"
        "</ows:WGS84BoundingBox>"
        f"<ows:Identifier>raster-{raster.id}</ows:Identifier>"
        "<Style isDefault=\"true\"><ows:Identifier>default</ows:Identifier></Style>"
        + f"<Format>{media}</Format>"
        + links + resources +
        "</Layer>" + matrix_sets + "</Contents>"
        f"<ServiceMetadataURL xlink:href={quoteattr(self_url)}/>"
        "</Capabilities>")
