"""How a raster tile looks: per-kind default styles, the style a request asks for, and
the rendering of a tile read by rio-tiler into PNG, WebP or JPEG.

Rendering is done here rather than by `ImageData.render()` on purpose: rio-tiler
expands a colormap to RGBA and encodes through GDAL's PNG driver at zlib level 6,
which costs more than reading the tile. A single-band styled tile is really 255
colours plus "no data", so it is encoded as a paletted PNG (one byte a pixel, index 0
transparent), which is several times cheaper to compress. Values map linearly from
`rescale=min,max` onto palette indices 1..255, i.e. onto the colormap's 256 entries
within one step of rio-tiler's own `rescale` + `colormap` result.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np
from PIL import Image
from rio_tiler.colormap import cmap as colormaps
from rio_tiler.errors import InvalidColorMapName

from processes.lidar.change import CLASS_COLORS, CLASSES

from ..errors import BadRequest

FORMATS = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
PNG_LEVEL = 1            # zlib level: 1 is ~3x faster than 6 for ~25% more bytes on these tiles


@dataclass(frozen=True)
class KindStyle:
    colormap: str | tuple[tuple[int, int, int, int], ...]   # a name or 256 RGBA entries
    hillshade: bool
    low: str                 # "zero", "symmetric" (-m..m around 0) or a percentile key of rio-tiler's statistics
    high: str
    classes: tuple[tuple[int, str], ...] = ()      # a class map: (value, name); the value is its colour's entry


def class_table(colors: Mapping[int, tuple[int, int, int, int]]) -> tuple[tuple[int, int, int, int], ...]:
    """256 RGBA entries: each class value's colour at its own index, the rest transparent."""
    return tuple(tuple(colors.get(i, (0, 0, 0, 0))) for i in range(256))  # type: ignore[misc]


DEFAULTS: dict[str, KindStyle] = {
    "chm": KindStyle("viridis", False, "zero", "percentile_98"),
    "dtm": KindStyle("terrain", True, "percentile_2", "percentile_98"),
    "dsm": KindStyle("terrain", True, "percentile_2", "percentile_98"),
    "density": KindStyle("magma", False, "zero", "percentile_98"),
    "metrics": KindStyle("viridis", False, "percentile_2", "percentile_98"),
    "aba": KindStyle("viridis", False, "zero", "percentile_98"),      # area-based predictions (per ha, >= 0)
    # compare: after − before in metres, red where the canopy fell, blue where it rose, white at 0
    "chm_diff": KindStyle("rdbu", False, "symmetric", "percentile_98"),
    "change": KindStyle(class_table(CLASS_COLORS), False, "zero", "max",
                        tuple((v, n) for v, n in CLASSES.items() if v in CLASS_COLORS)),
}


@dataclass(frozen=True)
class Style:
    bidx: int
    rescale: tuple[float, float] | None      # None: the kind's default from the band statistics
    colormap: str | tuple[tuple[int, int, int, int], ...]   # a name or 256 RGBA entries
    hillshade: bool

    def key(self) -> str:
        """A stable text form (part of the tile's ETag and cache key)."""
        cm = self.colormap if isinstance(self.colormap, str) else json.dumps(self.colormap)
        return f"b{self.bidx}|r{self.rescale}|c{cm}|h{int(self.hillshade)}"


def parse_format(f: str | None, ext: str | None) -> str:
    fmt = (ext or f or "png").lower()
    if fmt not in FORMATS:
        raise BadRequest(f"unsupported tile format {fmt!r}; use png, webp or jpeg")
    return "jpeg" if fmt == "jpg" else fmt


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in ("true", "1", "yes", "on"):
        return True
    if raw.lower() in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"{name} must be true or false, got {raw!r}")


def parse_rescale(raw: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in raw.split(","))
    except ValueError:
        raise BadRequest(f"rescale must be 'min,max' (two numbers), got {raw!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        raise BadRequest(f"rescale needs finite numbers with min < max, got {raw!r}")
    return low, high


def _parse_colormap(raw: str) -> str | tuple[tuple[int, int, int, int], ...]:
    raw = raw.strip()
    if not raw.startswith("{"):
        name = raw.lower()
        try:
            colormaps.get(name)
        except InvalidColorMapName:
            raise BadRequest(f"unknown colormap {raw!r}; use one of rio-tiler's names "
                             "(viridis, terrain, magma, gray, ...) or a JSON object") from None
        return name
    try:
        entries = {int(k): v for k, v in json.loads(raw).items()}
        table = [(0, 0, 0, 0)] * 256
        for index, color in entries.items():
            if not 0 <= index <= 255 or len(color) not in (3, 4):
                raise ValueError
            rgba = tuple(int(c) for c in color) + ((255,) if len(color) == 3 else ())
            if not all(0 <= c <= 255 for c in rgba):
                raise ValueError
            table[index] = rgba  # type: ignore[assignment]
    except (ValueError, TypeError, AttributeError):
        raise BadRequest("colormap JSON must map indices 0-255 to [r, g, b] or [r, g, b, a] "
                         "with components 0-255") from None
    return tuple(table)


GENERIC = KindStyle("viridis", False, "percentile_2", "percentile_98")


def kind_style(kind: str) -> KindStyle:
    """The default style of a raster kind; a kind not listed is drawn over its 2-98 % range."""
    return DEFAULTS.get(kind, GENERIC)


def legend(style: Style, kind: str) -> dict:
    """What a legend draws: sampled palette entries, and a class map's classes with their colours."""
    pal = palette(style.colormap)
    out: dict = {"legend": [[i, *map(int, pal[i])] for i in range(1, 256, 18)]}
    default = kind_style(kind)
    if default.classes and style.colormap == default.colormap:
        out["classes"] = [{"value": v, "name": name, "color": list(default.colormap[v])}
                          for v, name in default.classes]
    return out


def parse_style(args: Mapping[str, str], kind: str) -> Style:
    defaults = kind_style(kind)
    raw_bidx = args.get("bidx", "1")
    if not (raw_bidx.isascii() and raw_bidx.isdigit()) or int(raw_bidx) < 1:   # int() refuses "¹"
        raise BadRequest(f"bidx must be a band number starting at 1, got {raw_bidx!r}")
    raw_cm = args.get("colormap") or args.get("colormap_name")
    return Style(
        bidx=int(raw_bidx),
        rescale=parse_rescale(args["rescale"]) if args.get("rescale") else None,
        colormap=_parse_colormap(raw_cm) if raw_cm else defaults.colormap,
        hillshade=_bool("hillshade", args["hillshade"]) if "hillshade" in args else defaults.hillshade,
    )


def default_rescale(kind: str, stats: Mapping[str, float]) -> tuple[float, float]:
    """The kind's default value range from a band's statistics (rio-tiler's keys).

    A class map's range is 0..254: a value v then maps to palette index v + 1, which
    `palette` fills with entry v of the class table (exactly, for values below 127)."""
    style = kind_style(kind)
    if style.classes:
        return 0.0, 254.0
    if style.low == "symmetric":
        reach = max(abs(float(stats.get("percentile_2", stats.get("min", 0.0)))),
                    abs(float(stats.get(style.high, stats.get("max", 0.0)))))
        reach = max(1.0, math.ceil(reach)) if math.isfinite(reach) else 1.0
        return -reach, reach
    low = 0.0 if style.low == "zero" else float(stats.get(style.low, stats.get("min", 0.0)))
    high = float(stats.get(style.high, stats.get("max", 1.0)))
    if kind == "chm":
        high = max(1.0, math.ceil(high))          # whole metres: a legend people can read
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    return low, high


@lru_cache(maxsize=64)
def palette(colormap: str | tuple[tuple[int, int, int, int], ...]) -> np.ndarray:
    """(256, 4) uint8 RGBA: entry 0 transparent, entries 1..255 spread over the colormap."""
    table = np.zeros((256, 4), np.uint8)
    if isinstance(colormap, str):
        entries = colormaps.get(colormap)
        table[:] = [entries.get(i, (0, 0, 0, 0)) for i in range(256)]
    else:
        table[:] = colormap
    out = np.zeros((256, 4), np.uint8)
    out[1:] = table[np.rint(np.arange(255) * 255 / 254).astype(int)]
    return out


def to_indices(data: np.ndarray, mask: np.ndarray, rescale: tuple[float, float]) -> np.ndarray:
    """Palette indices (uint8): 0 where `mask` (no data) or NaN, else 1..255 linearly over `rescale`."""
    low, high = rescale
    scaled = (data.astype(np.float32) - np.float32(low)) * np.float32(254.0 / (high - low))
    np.clip(scaled, 0.0, 254.0, out=scaled)
    invalid = mask | np.isnan(scaled)
    scaled[invalid] = 0.0
    index = (scaled + 1.5).astype(np.uint8)
    index[invalid] = 0
    return index


def hillshade(elevation: np.ndarray, cell_m: float, azimuth: float = 315.0,
              altitude: float = 45.0) -> np.ndarray:
    """Horn (1981) hillshade in 0..1 of an elevation array padded by one pixel on each side
    (rio-tiler has no hillshade; this is the textbook 3x3 formula)."""
    p = elevation.astype(np.float32)
    dzdx = ((p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])) \
        / (8 * cell_m)
    dzdy = ((p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])) \
        / (8 * cell_m)
    slope = np.arctan(np.hypot(dzdx, dzdy))
    aspect = np.arctan2(dzdy, -dzdx)
    zenith = math.radians(90.0 - altitude)
    az = math.radians((360.0 - azimuth + 90.0) % 360.0)
    shade = math.cos(zenith) * np.cos(slope) + math.sin(zenith) * np.sin(slope) * np.cos(az - aspect)
    return np.nan_to_num(np.clip(shade, 0.0, 1.0), nan=1.0)


def encode_indexed(index: np.ndarray, pal: np.ndarray, fmt: str,
                   shade: np.ndarray | None = None) -> bytes:
    """Encode palette indices (optionally multiplied by a 0..1 hillshade) as `fmt`."""
    height, width = index.shape
    out = io.BytesIO()
    if fmt == "png" and shade is None:
        image = Image.frombuffer("P", (width, height), np.ascontiguousarray(index), "raw", "P", 0, 1)
        image.putpalette(pal[:, :3].tobytes())
        image.save(out, format="PNG", compress_level=PNG_LEVEL, transparency=pal[:, 3].tobytes())
        return out.getvalue()
    rgba = pal[index]
    if shade is not None:
        rgb = rgba[..., :3].astype(np.float32) * (0.35 + 0.65 * shade[..., None])
        rgba[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8)
    if fmt == "png":
        Image.fromarray(rgba, "RGBA").save(out, format="PNG", compress_level=PNG_LEVEL)
    elif fmt == "webp":
        Image.fromarray(rgba, "RGBA").save(out, format="WEBP", quality=85, method=2)
    else:
        Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()
