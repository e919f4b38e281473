"""Check a LAS/LAZ file against itself before anything trusts its header.

laspy trusts the header: a point count of 10**12 makes it allocate terabytes, a
header-only file that promises points reads as zero points, a zero scale puts
every point on the offset, NaN bounds pass through.  :func:`inspect` parses the
public header block itself (``struct``, a few hundred bytes), checks every
number against the file size and the LAZ chunk table, decodes only the first
and the last point, and returns the header facts the server stores.
"""
from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorruptFile, EmptyResult, InvalidPointCloud, TruncatedFile, UnknownCRS

# Minimum record length per point data record format (LAS 1.4 R15, table 7+).
POINT_RECORD_MIN = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}
# A LAZ point never compresses below this many bytes (real data: 2-10 bytes);
# used to refuse absurd point counts before decoding anything.
MIN_LAZ_BYTES_PER_POINT = 0.05
# Coordinates beyond this magnitude are not on Earth in any projected CRS.
MAX_ABS_COORD = 1e9
MAX_EXTENT = 5e6  # 5000 km (or feet): larger than any airborne scan
GROUND_PROBE = 50_000  # points decoded from the start of a file to see whether ground is classified


@dataclass(frozen=True)
class RawHeader:
    """The public header block, as numbers, before any trust."""

    version: tuple[int, int]
    header_size: int
    offset_to_points: int
    n_vlrs: int
    point_format: int
    compressed: bool
    record_length: int
    point_count: int
    scales: tuple[float, float, float]
    offsets: tuple[float, float, float]
    mins: tuple[float, float, float]
    maxs: tuple[float, float, float]
    evlr_start: int
    n_evlrs: int


def read_raw_header(f) -> RawHeader:
    """Parse the LAS public header block from an open binary file."""
    f.seek(0)
    head = f.read(375)
    if len(head) < 4 or head[:4] != b"LASF":
        raise InvalidPointCloud("not a LAS/LAZ file (the file does not start with 'LASF')")
    if len(head) < 227:
        raise TruncatedFile(f"the file is only {len(head)} bytes, shorter than a LAS header (227 bytes)")
    major, minor = head[24], head[25]
    if major != 1 or minor > 4:
        raise InvalidPointCloud(f"unsupported LAS version {major}.{minor} (1.0 to 1.4 are supported)")
    header_size, offset_to_points, n_vlrs = struct.unpack_from("<HII", head, 94)
    fmt_byte, record_length, legacy_count = struct.unpack_from("<BHI", head, 104)
    scales = struct.unpack_from("<3d", head, 131)
    offsets = struct.unpack_from("<3d", head, 155)
    maxx, minx, maxy, miny, maxz, minz = struct.unpack_from("<6d", head, 179)
    count = legacy_count
    evlr_start = n_evlrs = 0
    if minor >= 4 and len(head) >= 375 and header_size >= 375:
        evlr_start, n_evlrs, count14 = struct.unpack_from("<QIQ", head, 235)
        if count14 or legacy_count == 0:
            count = count14
    return RawHeader(
        version=(major, minor),
        header_size=header_size,
        offset_to_points=offset_to_points,
        n_vlrs=n_vlrs,
        point_format=fmt_byte & 0x3F,
        compressed=bool(fmt_byte & 0xC0),
        record_length=record_length,
        point_count=int(count),
        scales=tuple(scales),
        offsets=tuple(offsets),
        mins=(minx, miny, minz),
        maxs=(maxx, maxy, maxz),
        evlr_start=int(evlr_start),
        n_evlrs=int(n_evlrs),
    )


def check_header(h: RawHeader, file_size: int) -> None:
    """Refuse headers whose numbers cannot describe this file."""
    if h.header_size < 227 or h.header_size > file_size:
        raise InvalidPointCloud(f"header size {h.header_size} is impossible for a {file_size}-byte file")
    if h.offset_to_points < h.header_size or h.offset_to_points > file_size:
        raise TruncatedFile(
            f"point data should start at byte {h.offset_to_points} but the file has {file_size} bytes"
        )
    if h.point_format not in POINT_RECORD_MIN:
        raise InvalidPointCloud(f"unsupported point data format {h.point_format} (0 to 10 are supported)")
    if h.record_length < POINT_RECORD_MIN[h.point_format]:
        raise InvalidPointCloud(
            f"point record length {h.record_length} is shorter than format {h.point_format} needs "
            f"({POINT_RECORD_MIN[h.point_format]})"
        )
    for axis, s in zip("xyz", h.scales):
        if not math.isfinite(s) or s <= 0 or s > 10:
            raise InvalidPointCloud(f"{axis} scale factor {s!r} is invalid (must be a small positive number)")
    for axis, o in zip("xyz", h.offsets):
        if not math.isfinite(o) or abs(o) > MAX_ABS_COORD:
            raise InvalidPointCloud(f"{axis} offset {o!r} is invalid")
    if h.point_count == 0:
        return
    for axis, lo, hi, s, o in zip("xyz", h.mins, h.maxs, h.scales, h.offsets):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InvalidPointCloud(f"{axis} bounds [{lo}, {hi}] are not finite numbers")
        if lo > hi:
            raise InvalidPointCloud(f"{axis} bounds are inverted (min {lo} > max {hi})")
        if abs(lo) > MAX_ABS_COORD or abs(hi) > MAX_ABS_COORD or hi - lo > MAX_EXTENT:
            raise InvalidPointCloud(f"{axis} bounds [{lo}, {hi}] are absurd for an airborne scan")
        # every coordinate is an int32 times the scale plus the offset
        if max(abs(lo - o), abs(hi - o)) / s > 2**31 + 1:
            raise InvalidPointCloud(f"{axis} bounds [{lo}, {hi}] cannot be stored with scale {s} and offset {o}")
    data_bytes = file_size - h.offset_to_points
    if h.evlr_start and h.offset_to_points < h.evlr_start <= file_size:
        data_bytes = h.evlr_start - h.offset_to_points
    if not h.compressed:
        needed = h.point_count * h.record_length
        if needed > data_bytes:
            held = data_bytes // h.record_length
            raise TruncatedFile(f"the header promises {h.point_count:,} points but the file holds {held:,}")
    elif h.point_count * MIN_LAZ_BYTES_PER_POINT > data_bytes:
        raise TruncatedFile(
            f"the header promises {h.point_count:,} points but the compressed data is only {data_bytes:,} bytes"
        )


def _laz_chunk_table(path: Path, h: RawHeader, laz_vlr, file_size: int) -> list[tuple[int, int]]:
    """The LAZ chunk table [(points, bytes), ...], checked against the header.

    Raises :class:`TruncatedFile` / :class:`CorruptFile` when it cannot be read
    or disagrees with the header.
    """
    import lazrs

    with open(path, "rb") as f:
        f.seek(h.offset_to_points)
        raw = f.read(8)
        if len(raw) < 8:
            raise TruncatedFile("the LAZ file ends before its chunk table offset")
        (table_offset,) = struct.unpack("<q", raw)
        if table_offset == -1:  # written by a streaming writer: offset stored at the end of the file
            f.seek(file_size - 8)
            (table_offset,) = struct.unpack("<q", f.read(8))
        if not (h.offset_to_points + 8 <= table_offset <= file_size - 8):
            raise TruncatedFile(
                f"the LAZ chunk table should be at byte {table_offset} but the file has {file_size} bytes "
                "(truncated download?)"
            )
        f.seek(table_offset)
        version, n_chunks = struct.unpack("<II", f.read(8))
        if n_chunks > file_size:  # each entry takes at least one byte
            raise CorruptFile(f"the LAZ chunk table claims {n_chunks:,} chunks in a {file_size:,}-byte file")
        f.seek(h.offset_to_points)
        try:
            table = lazrs.read_chunk_table(f, laz_vlr)
        except BaseException as exc:  # lazrs panics are BaseException (pyo3 PanicException)
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            raise CorruptFile(f"the LAZ chunk table cannot be decoded: {exc}") from None
    if table is None:
        raise CorruptFile("the LAZ file has no chunk table")
    table = [(int(p), int(b)) for p, b in table]
    nbytes = sum(b for _, b in table)
    if nbytes != table_offset - h.offset_to_points - 8 or any(b <= 0 for _, b in table):
        raise CorruptFile("the LAZ chunk table does not add up to the compressed data size")
    return table


def _check_chunk_table(table: list[tuple[int, int]], h: RawHeader, chunk_size: int) -> None:
    points = sum(p for p, _ in table)
    nbytes = sum(b for _, b in table)
    if chunk_size not in (0, 0xFFFFFFFF):  # fixed-size chunks: the table's point counts may be left empty
        capacity = len(table) * chunk_size
        if h.point_count > capacity:
            raise TruncatedFile(
                f"the header promises {h.point_count:,} points but the LAZ chunks hold at most {capacity:,}"
            )
    elif points != h.point_count:
        raise TruncatedFile(f"the header promises {h.point_count:,} points but the LAZ chunks hold {points:,}")
    if len(table) and nbytes <= 0:
        raise CorruptFile("the LAZ chunk table lists no compressed bytes")


def _is_rust_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


def read_probe(path: Path, index: int, n: int, sequential: bool):
    """Decode ``n`` points starting at ``index`` (seeking through the chunk table)."""
    import laspy

    backend = laspy.LazBackend.Lazrs if sequential else laspy.LazBackend.LazrsParallel
    try:
        with laspy.open(str(path), laz_backend=backend) as r:
            if index:
                r.seek(index)
            return r.read_points(n)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise CorruptFile(f"points {index}..{index + n} cannot be decoded: {type(exc).__name__}: {exc}") from None


def require_usable(facts: dict) -> None:
    """Refuse a readable file that analysis cannot use (no points, no usable CRS): the one
    rule of both the upload check and ingestion, so that a file accepted at upload
    can be ingested. ``facts`` are :func:`inspect`'s, with the CRS override the scan uses."""
    if facts["point_count"] == 0:
        raise EmptyResult("the file holds no points")
    if facts["crs_error"]:
        raise UnknownCRS(facts["crs_error"])


def inspect(path: str | os.PathLike, *, crs=None) -> dict:
    """Validate a LAS/LAZ file cheaply and return its header facts.

    Reads the header, the VLRs and the LAZ chunk table, and decodes only the
    first and the last point; never allocates in proportion to the header's
    claims.  ``crs`` optionally overrides the file's CRS (as for the analysis).

    Returns
    -------
    dict
        ``las_version`` ("1.2"), ``point_format``, ``point_count``, ``bounds``
        (minx, miny, minz, maxx, maxy, maxz), ``scales``, ``offsets``,
        ``crs_wkt``, ``crs_epsg``, ``crs_error`` (why the CRS is unusable, or
        None), ``units`` (metres per horizontal unit), ``has_ground_class``
        (True when the first 50,000 points hold class 2 points, False when
        none of the file's points does, None when unknown without decoding more),
        ``is_copc``, ``compressed``, ``file_size``, ``warnings``.

    Raises
    ------
    InvalidPointCloud, TruncatedFile, CorruptFile
        When the file cannot be what its header claims.
    """
    import laspy

    from . import crs as crsmod

    path = Path(path)
    if not path.is_file():
        raise InvalidPointCloud(f"{path.name}: no such file")
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        raw = read_raw_header(f)
    check_header(raw, file_size)
    warnings: list[str] = []

    # laspy only parses the header + VLRs here (our checks above make it safe).
    try:
        with open(path, "rb") as f:
            data = f.read(raw.offset_to_points)
        header = laspy.LasHeader.read_from(io.BytesIO(data))
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise InvalidPointCloud(f"{path.name}: the header or its VLRs cannot be read: {exc}") from None

    is_copc = any(v.user_id == "copc" and v.record_id == 1 for v in header.vlrs)
    sequential_only = False
    if raw.compressed and raw.point_count:
        laz_vlr_rec = next((v for v in header.vlrs if v.user_id == "laszip encoded" and v.record_id == 22204), None)
        if laz_vlr_rec is None:
            raise CorruptFile(f"{path.name}: compressed point format but no LASzip VLR")
        import lazrs

        try:
            laz_vlr = lazrs.LazVlr(laz_vlr_rec.record_data)
            chunk_size = struct.unpack_from("<I", bytes(laz_vlr_rec.record_data), 12)[0]
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            raise CorruptFile(f"{path.name}: the LASzip VLR is invalid: {exc}") from None
        try:
            table = _laz_chunk_table(path, raw, laz_vlr, file_size)
            _check_chunk_table(table, raw, chunk_size)
        except CorruptFile as exc:
            # lazrs's sequential decoder does not need the chunk table.
            sequential_only = True
            warnings.append(f"{exc}; the file will be read with the sequential decoder")

    if raw.point_count and not sequential_only:
        try:
            read_probe(path, 0, 1, sequential=False)
        except CorruptFile as exc:
            sequential_only = True
            warnings.append(f"{exc}; the file will be read with the sequential decoder")
    has_ground = None
    if raw.point_count:
        # the first chunk (<= 50 000 points) is decoded anyway: it tells whether ground is classified
        first = read_probe(path, 0, min(raw.point_count, GROUND_PROBE), sequential=sequential_only)
        if len(first) and np.any(np.asarray(first.classification) == 2):
            has_ground = True
        elif raw.point_count <= GROUND_PROBE:
            has_ground = False
            warnings.append("no point is classified as ground (class 2): ground will be found by the "
                            "cloth simulation filter")
        else:
            warnings.append(f"none of the first {GROUND_PROBE:,} points is classified as ground (class 2)")
        if raw.point_count == 1:
            warnings.append("the file holds a single point: too few for any product")
        elif raw.mins[:2] == raw.maxs[:2]:
            warnings.append("every point has the same x and y (the header's bounds are one spot): "
                            "too few places for any product")
        first = first[:1]
        if len(first) != 1:
            raise TruncatedFile(f"{path.name}: the header promises {raw.point_count:,} points but none can be read")
        probes = [first]
        if raw.point_count > 1 and not sequential_only:
            last = read_probe(path, raw.point_count - 1, 1, sequential=False)
            if len(last) != 1:
                raise TruncatedFile(f"{path.name}: the last of {raw.point_count:,} promised points is missing")
            probes.append(last)
        tol = [2 * s for s in raw.scales]
        for pts in probes:
            for axis, lo, hi, t in zip("xyz", raw.mins, raw.maxs, tol):
                v = float(np.asarray(getattr(pts, axis))[0])
                if not (lo - t - 1e-6 * abs(lo) <= v <= hi + t + 1e-6 * abs(hi)):
                    warnings.append(f"a point has {axis}={v:.3f} outside the header bounds [{lo}, {hi}]")
                    break

    crs_wkt = crs_epsg = crs_error = None
    units = None
    try:
        resolved = crsmod.resolve(header, crs)
        crs_wkt, crs_epsg, units = resolved.wkt, resolved.epsg, resolved.xy_to_m
        if resolved.source == "wkt-horizontal-part":
            warnings.append("the file's compound WKT is invalid; its horizontal part is used")
    except UnknownCRS as exc:
        crs_error = str(exc)

    if raw.point_count == 0:
        has_ground = False
    return {
        "path": str(path),
        "file_size": file_size,
        "las_version": f"{raw.version[0]}.{raw.version[1]}",
        "point_format": raw.point_format,
        "point_count": raw.point_count,
        "compressed": raw.compressed,
        "is_copc": is_copc,
        "bounds": (*raw.mins[:2], raw.mins[2], *raw.maxs[:2], raw.maxs[2]),
        "scales": raw.scales,
        "offsets": raw.offsets,
        "crs_wkt": crs_wkt,
        "crs_epsg": crs_epsg,
        "crs_error": crs_error,
        "units": units,
        "has_ground_class": has_ground,
        "sequential_only": sequential_only,
        "warnings": warnings,
    }
