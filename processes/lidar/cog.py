"""Cloud Optimized GeoTIFF output, written tile by tile.

Rasters of a scan are assembled window by window in a temporary tiled GeoTIFF
(memory stays at one tile), then converted by rio-cogeo into a COG: 512 px
internal tiles, DEFLATE with a float predictor, overviews, nodata, CRS and
band names.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from .grid import Grid

NODATA = -9999.0


def _block(grid: Grid, largest: int) -> int:
    """Internal tile side: ``largest`` px, or the smallest power of two (>= 16)
    covering a raster smaller than that.  A 512 px tile of a 13 x 13 px
    raster is mostly padding, and with 60 bands compressing it costs ~0.7 s."""
    side = max(grid.nrow, grid.ncol, 16)
    return min(largest, 1 << (side - 1).bit_length())


class MosaicWriter:
    """Collects float32 windows of one raster and finalises it as a COG."""

    def __init__(self, path: str | Path, grid: Grid, crs, band_names: Sequence[str], *, to_native: float = 1.0,
                 tmpdir: str | Path | None = None, units: str | Sequence[str] = "metre", dtype: str = "float32",
                 nodata: float = NODATA, resampling: str = "average", colormap: dict | None = None,
                 classes: dict[int, str] | None = None):
        # dtype/nodata/resampling: a class map is uint8 with its own nodata, its overviews by "nearest",
        # a colour table (value -> RGBA) and its class names (band tag `classes`, JSON value -> name)
        self.path = Path(path)
        self.grid = grid
        self.dtype, self.nodata, self.resampling = dtype, nodata, resampling
        self.predictor = 3 if np.dtype(dtype).kind == "f" else 2
        self.bands = list(band_names)
        fd, tmp = tempfile.mkstemp(suffix=".tif", dir=tmpdir or self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.units = [units] * len(self.bands) if isinstance(units, str) else list(units)
        self.ds = rasterio.open(
            self.tmp, "w", driver="GTiff", width=grid.ncol, height=grid.nrow, count=len(self.bands),
            dtype=dtype, crs=crs, transform=grid.transform(to_native), nodata=nodata,
            tiled=True, blockxsize=_block(grid, 256), blockysize=_block(grid, 256), compress="deflate",
            predictor=self.predictor, BIGTIFF="IF_SAFER",
        )
        # empty areas stay nodata even where no tile writes
        for i, name in enumerate(self.bands, start=1):
            self.ds.set_band_description(i, name)
            self.ds.update_tags(i, units=self.units[i - 1])  # forwarded into the COG's band metadata
            if classes:
                self.ds.update_tags(i, classes=json.dumps({str(k): v for k, v in classes.items()}))
        if colormap:
            self.ds.write_colormap(1, colormap)        # kept by rio-cogeo (a palette band)
        self.written = False

    def write(self, data: np.ndarray, grid: Grid) -> None:
        """Write a (bands, rows, cols) or (rows, cols) block lying on ``grid`` (same lattice)."""
        data = np.asarray(data, np.float32 if self.predictor == 3 else np.float64)
        if data.ndim == 2:
            data = data[None]
        r, c = self.grid.window_of(grid)
        # clip to this mosaic
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + grid.nrow, self.grid.nrow), min(c + grid.ncol, self.grid.ncol)
        if r1 <= r0 or c1 <= c0:
            return
        block = data[:, r0 - r : r1 - r, c0 - c : c1 - c]
        block = np.where(np.isfinite(block), block, self.nodata).astype(self.dtype)
        self.ds.write(block, window=Window(c0, r0, c1 - c0, r1 - r0))
        self.written = True

    def close(self) -> Path:
        """Finish: convert to a COG at ``path``."""
        from rasterio.rio.overview import get_maximum_overview_level
        from rio_cogeo.cogeo import cog_translate
        from rio_cogeo.profiles import cog_profiles

        self.ds.close()
        profile = cog_profiles.get("deflate")
        bs = _block(self.grid, 512)
        profile.update(predictor=self.predictor, blockxsize=bs, blockysize=bs)
        # overviews down to 256 px, so a map or QGIS zoomed out reads a few tiles, not the raster
        levels = get_maximum_overview_level(self.grid.ncol, self.grid.nrow, minsize=256)
        try:
            cog_translate(str(self.tmp), str(self.path), profile, quiet=True, overview_resampling=self.resampling,
                          overview_level=levels, use_cog_driver=False, in_memory=False, web_optimized=False,
                          nodata=self.nodata, forward_band_tags=True)
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        try:
            self.ds.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def write_cog(path: str | Path, data: np.ndarray, grid: Grid, crs, band_names: Sequence[str] = ("band1",),
              *, to_native: float = 1.0, **options) -> Path:
    """Write an in-memory raster (bands, rows, cols) as a COG (``options``: those of MosaicWriter)."""
    w = MosaicWriter(path, grid, crs, band_names, to_native=to_native, **options)
    try:
        w.write(data, grid)
    except BaseException:
        w.abort()
        raise
    return w.close()


def validate_cog(path: str | Path) -> tuple[bool, list[str], list[str]]:
    """rio-cogeo's validator: (is_valid, errors, warnings)."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)


def read_raster(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a raster (NaN for nodata) and its profile + band names."""
    with rasterio.open(path) as ds:
        a = ds.read(masked=True).astype(np.float64).filled(np.nan)
        meta = dict(ds.profile)
        meta["band_names"] = list(ds.descriptions)
        meta["transform"] = ds.transform
    return a, meta
