"""The tile matrix sets Canopy tiles in (morecantile's definitions) and the OGC API -
Tiles documents built from them: tile matrix set lists, tileset metadata with
`tileMatrixSetLimits`, and the checks a `{tileMatrix}/{tileRow}/{tileCol}` must pass."""

from __future__ import annotations

import math
from dataclasses import dataclass

import morecantile

from ..errors import BadRequest, NotFound

SUPPORTED = ("WebMercatorQuad", "WorldCRS84Quad")
OVERZOOM = 2            # matrices served past the raster's native resolution
_TMS = {name: morecantile.tms.get(name) for name in SUPPORTED}


def get_tms(tms_id: str) -> morecantile.TileMatrixSet:
    tms = _TMS.get(tms_id)
    if tms is None:
        raise NotFound(f"unknown tile matrix set {tms_id!r}; supported: {', '.join(SUPPORTED)}")
    return tms


def tms_document(tms_id: str, base: str) -> dict:
    doc = get_tms(tms_id).model_dump(exclude_none=True, mode="json")
    doc["links"] = [{"rel": "self", "type": "application/json",
                     "href": f"{base}/tileMatrixSets/{tms_id}"}]
    return doc


def tms_list(base: str) -> dict:
    return {"tileMatrixSets": [
        {"id": name, "title": _TMS[name].title, "uri": str(_TMS[name].uri),
         "crs": crs_uri(_TMS[name]),
         "links": [{"rel": "self", "type": "application/json",
                    "href": f"{base}/tileMatrixSets/{name}"}]} for name in SUPPORTED]}


def crs_uri(tms: morecantile.TileMatrixSet) -> str:
    crs = tms.crs
    return str(crs.root if hasattr(crs, "root") else crs)


@dataclass(frozen=True)
class Limit:
    z: int
    min_row: int
    max_row: int
    min_col: int
    max_col: int

    def as_ogc(self) -> dict:
        return {"tileMatrix": str(self.z), "minTileRow": self.min_row, "maxTileRow": self.max_row,
                "minTileCol": self.min_col, "maxTileCol": self.max_col}


def limits(tms: morecantile.TileMatrixSet, bounds: tuple[float, float, float, float],
           minzoom: int, maxzoom: int) -> list[Limit]:
    """Tile ranges covering `bounds` (west, south, east, north in the TMS's geographic CRS)."""
    west, south, east, north = bounds
    eps = 1e-9
    out = []
    for z in range(minzoom, maxzoom + 1):
        ul = tms.tile(west + eps, north - eps, z)
        lr = tms.tile(east - eps, south + eps, z)
        out.append(Limit(z, ul.y, lr.y, ul.x, lr.x))
    return out


def parse_tile(tms: morecantile.TileMatrixSet, z: str, y: str, x: str) -> tuple[int, int, int]:
    """(z, y, x) as integers inside the tile matrix set; 400 for non-integers, 404 outside it."""
    try:
        zi, yi, xi = int(z), int(y), int(x)
    except ValueError:
        raise BadRequest(f"tileMatrix, tileRow and tileCol must be integers, got {z}/{y}/{x}") from None
    if zi < 0 or yi < 0 or xi < 0:
        raise BadRequest(f"tileMatrix, tileRow and tileCol must not be negative, got {z}/{y}/{x}")
    if zi > tms.maxzoom:
        raise NotFound(f"tile matrix {zi} is not in {tms.id} (0 to {tms.maxzoom})")
    matrix = tms.matrix(zi)
    if yi >= matrix.matrixHeight or xi >= matrix.matrixWidth:
        raise NotFound(f"tile {zi}/{yi}/{xi} is outside tile matrix {zi} of {tms.id} "
                       f"({matrix.matrixHeight} rows x {matrix.matrixWidth} columns)")
    return zi, yi, xi


def check_limits(found: list[Limit], z: int, y: int, x: int) -> None:
    """404 for a tile outside the tileset's tileMatrixSetLimits (OGC API - Tiles /req/core/tc-error)."""
    for limit in found:
        if limit.z == z:
            if limit.min_row <= y <= limit.max_row and limit.min_col <= x <= limit.max_col:
                return
            break
    raise NotFound(f"tile {z}/{y}/{x} is outside this tileset's tileMatrixSetLimits")


def native_zoom(tms: morecantile.TileMatrixSet, resolution: float) -> int:
    """The first zoom whose cell size (TMS units) is at or below `resolution`."""
    for matrix in tms.tileMatrices:
        if matrix.cellSize <= resolution * (1 + 1e-6):
            return int(matrix.id)
    return tms.maxzoom


def center(bounds: tuple[float, float, float, float]) -> tuple[float, float]:
    w, s, e, n = bounds
    return (w + e) / 2, (s + n) / 2


def ground_cell_size_m(tms: morecantile.TileMatrixSet, z: int, lat: float) -> float:
    """Metres on the ground a pixel of tile matrix `z` spans near latitude `lat`."""
    size = tms.matrix(z).cellSize
    if tms.id == "WorldCRS84Quad":
        return size * 111_320.0 * math.cos(math.radians(lat))
    return size * math.cos(math.radians(lat))
