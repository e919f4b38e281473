"""Coordinate reference systems of point clouds.

LAS files carry their CRS as an OGC WKT VLR (LAS 1.4 / PDRF 6+) or as GeoTIFF
keys (older files).  Real files are often broken: compound WKT strings that PROJ
rejects, vendor WKT without an EPSG code, feet units.  This module turns
whatever the file has (or the user's override) into a *horizontal* pyproj CRS
and the factors that convert the file's units to metres, so the analysis steps
can work in metres whatever the file's units.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pyproj import CRS
from pyproj.exceptions import CRSError

from .errors import UnknownCRS

CRSLike = "CRS | str | int | None"


@dataclass(frozen=True)
class ResolvedCRS:
    """A horizontal CRS plus unit factors (file units -> metres)."""

    crs: CRS
    xy_to_m: float
    z_to_m: float
    source: str  # "override", "wkt", "geotiff", "wkt-horizontal-part"

    @property
    def epsg(self) -> int | None:
        return epsg_of(self.crs)

    @property
    def wkt(self) -> str:
        return self.crs.to_wkt()


def epsg_of(crs: CRS) -> int | None:
    """EPSG code of ``crs`` when PROJ identifies one (70 % confidence, its default)."""
    try:
        code = crs.to_epsg()
    except CRSError:
        return None
    return int(code) if code is not None else None


def parse_user_crs(value: "CRS | str | int") -> CRS:
    """Parse a user-given CRS ("EPSG:3005", 3005, WKT, PROJ string)."""
    try:
        crs = value if isinstance(value, CRS) else CRS.from_user_input(value)
    except CRSError as exc:
        raise UnknownCRS(f"cannot understand the CRS {str(value)[:80]!r}: {exc}") from None
    return horizontal_part(crs)


def horizontal_part(crs: CRS) -> CRS:
    """The horizontal component of a compound CRS (the CRS itself otherwise)."""
    if crs.is_compound and crs.sub_crs_list:
        return crs.sub_crs_list[0]
    return crs


def _balanced(text: str, start: int) -> str | None:
    """The bracketed WKT node that starts at ``start`` (``NAME[ ... ]``)."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c in "[(":
            depth += 1
        elif c in ")]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


# Hand-written: PROJ refuses a whole COMPD_CS when its vertical part is broken
# (e.g. a VERT_DATUM naming a geoid file), but its horizontal PROJCS/GEOGCS node
# alone is valid WKT1; no library extracts it for us.
_HORIZONTAL_NODES = re.compile(r"\b(PROJCS|PROJCRS|PROJECTEDCRS|GEOGCS|GEOGCRS|GEODCRS)\s*[\[(]")


def crs_from_wkt(wkt: str) -> tuple[CRS, str]:
    """Parse WKT, falling back to its first horizontal node when the whole fails."""
    wkt = wkt.strip().rstrip("\x00").strip()
    if not wkt:
        raise UnknownCRS("the file's WKT CRS record is empty")
    try:
        return horizontal_part(CRS.from_wkt(wkt)), "wkt"
    except CRSError as first_error:
        m = _HORIZONTAL_NODES.search(wkt)
        node = _balanced(wkt, m.start()) if m else None
        if node:
            try:
                return horizontal_part(CRS.from_wkt(node)), "wkt-horizontal-part"
            except CRSError:
                pass
        raise UnknownCRS(f"the file's WKT CRS cannot be parsed ({first_error}); pass crs=") from None


def _vertical_factor(full: CRS | None, horizontal_factor: float) -> float:
    if full is not None and full.is_compound and len(full.sub_crs_list) > 1:
        try:
            return float(full.sub_crs_list[1].axis_info[0].unit_conversion_factor)
        except (IndexError, AttributeError):
            pass
    # LAS convention: z is in the same linear unit as x and y.
    return horizontal_factor


def unit_factor(crs: CRS) -> float:
    """Metres per horizontal unit of ``crs`` (1 for degrees: geographic scans are refused later)."""
    try:
        axis = crs.axis_info[0]
    except IndexError:
        return 1.0
    if axis.unit_name and "degree" in axis.unit_name.lower():
        return 1.0
    return float(axis.unit_conversion_factor or 1.0)


def crs_from_header(header) -> tuple[CRS | None, str | None]:
    """The CRS found in a laspy header's VLRs (None when the file has none).

    Raises :class:`UnknownCRS` when the file has a CRS record that cannot be
    read at all (not even its horizontal part).
    """
    wkt_vlr = None
    for vlr in list(header.vlrs) + list(getattr(header, "evlrs", None) or []):
        if getattr(vlr, "record_id", None) == 2112 and getattr(vlr, "user_id", "").startswith("LASF_Projection"):
            wkt_vlr = vlr
    try:
        crs = header.parse_crs()
    except (CRSError, Exception):  # laspy re-raises PROJ errors of several types
        crs = None
    if crs is not None:
        return horizontal_part(crs), "geotiff" if wkt_vlr is None else "wkt"
    if wkt_vlr is not None:
        raw = wkt_vlr.string if hasattr(wkt_vlr, "string") else bytes(wkt_vlr.record_data).decode("ascii", "replace")
        return crs_from_wkt(raw)
    return None, None


def resolve(header, override: "CRS | str | int | None" = None) -> ResolvedCRS:
    """The horizontal CRS of a file and its unit factors; ``override`` wins.

    Raises :class:`UnknownCRS` when the file has no usable CRS and no override
    is given: a scan without a CRS cannot be placed on a map.
    """
    full = None
    if override is not None:
        crs, source = parse_user_crs(override), "override"
    else:
        crs, source = crs_from_header(header)
        if crs is None:
            raise UnknownCRS("the file has no CRS record (WKT or GeoTIFF keys); pass crs= (e.g. 'EPSG:3005')")
        try:
            full = header.parse_crs()
        except Exception:
            full = None
    if crs.is_geographic:
        raise UnknownCRS(
            f"the CRS {crs.name!r} is geographic (degrees); LiDAR analysis needs a projected CRS in metres or feet"
        )
    f = unit_factor(crs)
    return ResolvedCRS(crs=crs, xy_to_m=f, z_to_m=_vertical_factor(full, f), source=source)
