"""What Canopy reads from an open COG through rio-tiler: tiles (styled by `render`),
band statistics and histograms, the values at a point, and the tileset's extent."""

from __future__ import annotations

import math
import warnings

import morecantile
import numpy as np
from rio_tiler.errors import PointOutsideBounds, TileOutsideBounds

from ..errors import BadRequest, NotFound
from . import render, tms as tms_mod
from .datasets import OpenDataset


def _check_band(entry: OpenDataset, bidx: int) -> None:
    count = entry.reader.dataset.count
    if bidx > count:
        raise BadRequest(f"bidx {bidx} is out of range: this raster has {count} band(s)")


def band_stats(entry: OpenDataset, bidx: int) -> dict[str, float]:
    """Statistics of band `bidx` (from an overview of at most 1024 px), memoised per file version."""
    key = ("stats", bidx)
    if key not in entry.memo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = entry.reader.statistics(indexes=bidx, percentiles=[2, 98], max_size=1024)
        entry.memo[key] = next(iter(stats.values())).model_dump()
    return entry.memo[key]


def zoom_range(entry: OpenDataset) -> tuple[int, int]:
    return 0, min(entry.reader.tms.maxzoom, entry.reader.maxzoom + tms_mod.OVERZOOM)


def geographic_bounds(entry: OpenDataset) -> tuple[float, float, float, float]:
    if "bounds" not in entry.memo:
        crs = entry.reader.tms.rasterio_geographic_crs
        entry.memo["bounds"] = tuple(entry.reader.get_geographic_bounds(crs))
    return entry.memo["bounds"]


def tile_limits(entry: OpenDataset) -> list[tms_mod.Limit]:
    if "limits" not in entry.memo:
        entry.memo["limits"] = tms_mod.limits(entry.reader.tms, geographic_bounds(entry),
                                              *zoom_range(entry))
    return entry.memo["limits"]


def tile(entry: OpenDataset, kind: str, z: int, y: int, x: int, style: render.Style,
         fmt: str) -> bytes:
    """The styled tile z/y/x (tileMatrix/tileRow/tileCol) in `fmt`."""
    _check_band(entry, style.bidx)
    tms_mod.check_limits(tile_limits(entry), z, y, x)
    rescale = style.rescale or render.default_rescale(kind, band_stats(entry, style.bidx))
    buffer = 1 if style.hillshade else None
    try:
        image = entry.reader.tile(x, y, z, indexes=style.bidx, buffer=buffer)
    except TileOutsideBounds:
        raise NotFound(f"tile {z}/{y}/{x} does not intersect the raster") from None
    data = np.ma.getdata(image.array)[0]
    mask = np.ma.getmaskarray(image.array)[0]
    shade = None
    if style.hillshade:
        lat = tms_mod.center(geographic_bounds(entry))[1]
        cell = tms_mod.ground_cell_size_m(entry.reader.tms, z, lat)
        filled = np.where(mask, np.nan, data.astype(np.float32))
        if np.isnan(filled).all():
            filled[:] = 0.0
        else:
            filled = np.where(np.isnan(filled), np.nanmean(filled), filled)
        shade = render.hillshade(filled, cell)
        data, mask = data[1:-1, 1:-1], mask[1:-1, 1:-1]
    index = render.to_indices(data, mask, rescale)
    return render.encode_indexed(index, render.palette(style.colormap), fmt, shade)


def point(entry: OpenDataset, lon: float, lat: float) -> list[float | None]:
    """The value of every band at (lon, lat) (CRS84); None where there is no data."""
    try:
        data = entry.reader.point(lon, lat)
    except PointOutsideBounds:
        raise NotFound(f"({lon}, {lat}) is outside the raster") from None
    values = np.ma.getdata(data.array)
    mask = np.ma.getmaskarray(data.array)
    return [None if m or not math.isfinite(float(v)) else float(v) for v, m in zip(values, mask)]


def statistics(entry: OpenDataset, bidx: list[int], bins: int) -> dict[str, dict]:
    for b in bidx:
        _check_band(entry, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = entry.reader.statistics(indexes=bidx, percentiles=[2, 50, 98], max_size=1024,
                                        hist_options={"bins": bins})
    return {name: value.model_dump() for name, value in found.items()}


def describe(entry: OpenDataset) -> dict:
    ds = entry.reader.dataset
    return {"width": ds.width, "height": ds.height, "count": ds.count, "dtype": ds.dtypes[0],
            "nodata": ds.nodata, "crs": ds.crs.to_string() if ds.crs else None,
            "bounds_native": list(ds.bounds), "band_descriptions": list(ds.descriptions),
            "band_units": [ds.tags(i).get("units") or ds.units[i - 1] or None for i in range(1, ds.count + 1)],
            "overviews": ds.overviews(1)}


def parse_lonlat(lon: str | None, lat: str | None) -> tuple[float, float]:
    try:
        x, y = float(lon or ""), float(lat or "")
    except ValueError:
        raise BadRequest("lon and lat must be numbers (CRS84 degrees)") from None
    if not (-180 <= x <= 180 and -90 <= y <= 90):
        raise BadRequest(f"lon must be within -180..180 and lat within -90..90, got {x}, {y}")
    return x, y


def tms_for(tms_id: str) -> morecantile.TileMatrixSet:
    return tms_mod.get_tms(tms_id)
