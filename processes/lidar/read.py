"""Reading scans: one or several LAS/LAZ/COPC files treated as one point cloud.

Files are validated with :func:`validate.inspect` first, then streamed in chunks
(laspy + lazrs, multi-threaded) so memory never depends on the scan size.  The
parallel decoder panics on a corrupt chunk table (a Rust panic surfaces as a
``BaseException``); the reader then falls back to the sequential decoder,
which does not need the table, and reports decoding failures as
:class:`CorruptFile`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import crs as crsmod
from .errors import CorruptFile, IncompatibleInputs, InvalidPointCloud, TruncatedFile
from .points import Points
from .validate import inspect

PathLike = str | os.PathLike
Bounds2D = tuple[float, float, float, float]  # minx, miny, maxx, maxy (metres)


@dataclass(frozen=True)
class ScanFile:
    path: Path
    info: dict  # validate.inspect() facts
    bounds_m: Bounds2D  # xy bounds in the metre frame

    @property
    def point_count(self) -> int:
        return int(self.info["point_count"])


@dataclass(frozen=True)
class Scan:
    """Several files sharing one CRS, read as one point cloud."""

    files: tuple[ScanFile, ...]
    crs: crsmod.ResolvedCRS

    @property
    def point_count(self) -> int:
        return sum(f.point_count for f in self.files)

    @property
    def bounds_m(self) -> Bounds2D:
        b = np.array([f.bounds_m for f in self.files if f.point_count])
        if not len(b):
            return (0.0, 0.0, 0.0, 0.0)
        return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))

    def to_native(self, v: np.ndarray | float) -> np.ndarray | float:
        """Metre-frame horizontal coordinates -> the CRS's own units."""
        return v / self.crs.xy_to_m


def _is_system_exit(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


def open_scan(inputs: PathLike | Sequence[PathLike], crs=None) -> Scan:
    """Validate every file of a scan and agree on one CRS.

    Parameters
    ----------
    inputs : path or list of paths
        LAS/LAZ/COPC files (tiles) forming one scan.
    crs : CRS-like, optional
        Override for files without (or with a wrong) CRS.

    Raises
    ------
    InvalidPointCloud
        A file is unreadable (see :func:`validate.inspect`).
    UnknownCRS
        No usable CRS and no override.
    IncompatibleInputs
        The files do not share a CRS.
    """
    import laspy

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InvalidPointCloud("no input file given")
    files: list[ScanFile] = []
    resolved: crsmod.ResolvedCRS | None = None
    for p in inputs:
        path = Path(p)
        info = inspect(path)
        try:
            with laspy.open(str(path), laz_backend=laspy.LazBackend.Lazrs) as r:
                header = r.header
        except BaseException as exc:
            if _is_system_exit(exc):
                raise
            raise InvalidPointCloud(f"{path.name}: cannot open: {exc}") from None
        this = crsmod.resolve(header, crs)
        if resolved is None:
            resolved = this
        elif not this.crs.equals(resolved.crs, ignore_axis_order=True) or this.xy_to_m != resolved.xy_to_m:
            raise IncompatibleInputs(
                f"{path.name} is in {this.crs.name!r} but the scan's first file is in {resolved.crs.name!r}"
            )
        b = info["bounds"]
        f = this.xy_to_m
        files.append(ScanFile(path, info, (b[0] * f, b[1] * f, b[3] * f, b[4] * f)))
    assert resolved is not None
    return Scan(tuple(files), resolved)


def _intersects(a: Bounds2D, b: Bounds2D) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _decode(path: Path, chunk_size: int, sequential: bool, skip: int, selection) -> Iterator:
    import laspy

    backend = laspy.LazBackend.Lazrs if sequential else laspy.LazBackend.LazrsParallel
    with laspy.open(str(path), laz_backend=backend, decompression_selection=selection) as r:
        done = 0
        for chunk in r.chunk_iterator(chunk_size):
            n = len(chunk)
            if done + n <= skip:
                done += n
                continue
            if done < skip:
                chunk = chunk[skip - done :]
            done += n
            yield chunk


def _columns(chunk, f_xy: float, f_z: float) -> Points:
    x = np.asarray(chunk.x, dtype=np.float64)
    y = np.asarray(chunk.y, dtype=np.float64)
    z = np.asarray(chunk.z, dtype=np.float64)
    if f_xy != 1.0:
        x = x * f_xy
        y = y * f_xy
    if f_z != 1.0:
        z = z * f_z
    return Points(
        x=x,
        y=y,
        z=z,
        intensity=np.asarray(chunk.intensity, dtype=np.uint16),
        return_number=np.asarray(chunk.return_number, dtype=np.uint8),
        number_of_returns=np.asarray(chunk.number_of_returns, dtype=np.uint8),
        classification=np.asarray(chunk.classification, dtype=np.uint8),
    )


def iter_file(scan: Scan, sf: ScanFile, chunk_size: int = 1_000_000, *, xy_only: bool = False) -> Iterator[Points]:
    """Stream one file of a scan as :class:`Points` chunks (metre frame).

    Falls back to the sequential decoder when the parallel one fails (corrupt
    chunk table); raises :class:`CorruptFile` / :class:`TruncatedFile` when
    the data cannot be decoded or holds fewer points than promised.
    """
    import laspy

    sel = laspy.DecompressionSelection.XY_RETURNS_CHANNEL
    if not xy_only:
        sel = sel | laspy.DecompressionSelection.Z | laspy.DecompressionSelection.CLASSIFICATION
        sel = sel | laspy.DecompressionSelection.INTENSITY
    sequential = bool(sf.info.get("sequential_only")) or not sf.info.get("compressed")
    done = 0
    attempts = 0
    while True:
        try:
            for chunk in _decode(sf.path, chunk_size, sequential, done, sel):
                pts = _columns(chunk, scan.crs.xy_to_m, scan.crs.z_to_m)
                done += len(pts)
                yield pts
            break
        except BaseException as exc:
            if _is_system_exit(exc):
                raise
            attempts += 1
            if not sequential and attempts == 1:
                sequential = True  # the sequential decoder reads files whose chunk table is corrupt
                continue
            raise CorruptFile(
                f"{sf.path.name}: point data cannot be decoded after {done:,} points: {type(exc).__name__}: {exc}"
            ) from None
    if done < sf.point_count:
        raise TruncatedFile(f"{sf.path.name}: the header promises {sf.point_count:,} points but the file holds {done:,}")


def iter_points(
    scan: Scan, bounds: Bounds2D | None = None, chunk_size: int = 1_000_000, *, xy_only: bool = False
) -> Iterator[Points]:
    """Stream the scan's points, optionally only those inside ``bounds`` (metres)."""
    for sf in scan.files:
        if not sf.point_count:
            continue
        if bounds is not None and not _intersects(sf.bounds_m, bounds):
            continue
        for pts in iter_file(scan, sf, chunk_size, xy_only=xy_only):
            if bounds is not None:
                m = (pts.x >= bounds[0]) & (pts.x <= bounds[2]) & (pts.y >= bounds[1]) & (pts.y <= bounds[3])
                if not m.all():
                    pts = pts.subset(m)
            if len(pts):
                yield pts


def read_points(scan: Scan, bounds: Bounds2D | None = None) -> Points:
    """All points of the scan (or of ``bounds``) in memory — for tiles and small scans."""
    return Points.concat(list(iter_points(scan, bounds)))


def scan_files(inputs: Iterable[PathLike]) -> list[Path]:
    """Expand directories into their .las/.laz files (sorted)."""
    out: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in (".las", ".laz")))
        else:
            out.append(p)
    return out
