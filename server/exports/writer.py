"""Write a query's rows to a GIS file with GDAL (pyogrio), streaming.

PostgreSQL sends the rows as CSV (`COPY (SELECT …) TO STDOUT`); a flat CSV export is
that stream itself, and for the GIS formats Arrow's CSV reader turns it into record
batches (typed columns, hex WKB geometry decoded) that go to GDAL as an Arrow stream
(`pyogrio.write_arrow`). Nothing makes a Python object per value and nothing holds
more than a block of rows, so memory stays flat whatever the row count and a million
trees take seconds. GeoPackage and FlatGeobuf are GDAL's drivers; a Shapefile is its
files zipped.
"""

from __future__ import annotations

import binascii
import io
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyogrio
from psycopg import sql

from providers.db_errors import CLIENT_ERRORS, describe
from providers.schema import Table

from ..errors import BadRequest
from . import columns as columns_

@dataclass(frozen=True)
class Format:
    key: str                 # the `f` value
    driver: str              # GDAL's driver
    media_type: str          # the response's Content-Type
    extension: str           # of the file served
    accept: tuple[str, ...]  # media types that negotiate to it


FORMATS = {f.key: f for f in (
    Format("gpkg", "GPKG", "application/geopackage+sqlite3", "gpkg", ("application/geopackage+sqlite3",)),
    Format("shp", "ESRI Shapefile", "application/zip", "zip",
           ("application/x-shapefile", "application/zip", "application/x-zipped-shp")),
    Format("fgb", "FlatGeobuf", "application/flatgeobuf", "fgb", ("application/flatgeobuf",)),
    Format("csv", "CSV", "text/csv; charset=utf-8", "csv", ("text/csv",)),
)}


class _CopyReader(io.RawIOBase):
    """A COPY's chunks as a readable binary file (what Arrow's CSV reader reads)."""

    def __init__(self, chunks: Iterator[bytes], first: bytes):
        self._chunks, self._buf = chunks, memoryview(first)

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buf = memoryview(chunk)
        n = min(len(target), len(self._buf))
        target[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _batches(reader: pacsv.CSVStreamingReader, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Arrow batches of the CSV with the geometry's hex WKB decoded to bytes."""
    geometry = schema.get_field_index("geometry")
    for batch in reader:
        arrays = list(batch.columns)
        if geometry >= 0:
            arrays[geometry] = pa.array([None if h is None else binascii.unhexlify(h)
                                         for h in arrays[geometry].to_pylist()], pa.binary())
        yield pa.record_batch(arrays, schema=schema)


def write(conn: psycopg.Connection, table: Table, where: sql.Composable, fmt: Format, path: Path, *,
          srid: int = 4326, order: sql.Composable | None = None, limit: int | None = None,
          offset: int = 0, layer: str | None = None, source: sql.Composable | None = None) -> None:
    """Write `table`'s rows matching `where` to `path` (a Shapefile: `path` is the zip)
    in `fmt`, geometries in `srid`. `source`: a query standing for the table
    (columns.source_of)."""
    if fmt.key == "shp" and path.suffix != ".zip":
        raise ValueError(f"a Shapefile export is a zip: {path} must end in .zip")
    csv = fmt.key == "csv"
    with_geometry = not (csv and table.geometry_type == "Point")   # points: x, y, lon, lat say it all
    try:
        cols = columns_.columns(conn, table, where, source=source)   # plots: a query of their metric keys
        query = columns_.select(table, cols, where, srid if with_geometry else None, order or sql.SQL("t.id"),
                                limit, offset, source, geometry_as="wkt" if csv else "wkb")
        copy_sql = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv{})").format(
            query, sql.SQL(", HEADER") if csv else sql.SQL(""))
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            first = bytes(next(iter(copy), b""))
            if csv:
                with open(path, "wb") as fh:
                    fh.write(first)
                    for chunk in copy:
                        fh.write(chunk)
                return
            text_times = fmt.key == "shp"               # dBASE has no time of day: ISO text instead
            fields = [pa.field(c.name, pa.string() if text_times and pa.types.is_timestamp(c.arrow) else c.arrow)
                      for c in cols] + [pa.field("geometry", pa.binary())]
            schema = pa.schema(fields)
            read_types = {f.name: (pa.string() if f.name == "geometry" else f.type) for f in fields}
            if first:
                reader = pacsv.open_csv(
                    io.BufferedReader(_CopyReader(iter(copy), first), 1 << 20),
                    read_options=pacsv.ReadOptions(column_names=[f.name for f in fields], block_size=8 << 20, use_threads=False),
                    convert_options=pacsv.ConvertOptions(column_types=read_types, strings_can_be_null=True,
                                                         quoted_strings_can_be_null=False, null_values=[""],
                                                         true_values=["t"], false_values=["f"]))
                stream = pa.RecordBatchReader.from_batches(schema, _batches(reader, schema))
            else:
                stream = pa.Table.from_batches([], schema=schema)
            target = path.with_suffix(".shp") if fmt.key == "shp" else path
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")        # Shapefile's 10-character field names, laundered by GDAL
                pyogrio.write_arrow(stream, str(target), layer=layer or table.name, driver=fmt.driver,
                                    geometry_name="geometry", geometry_type=table.geometry_type,
                                    crs=f"EPSG:{srid}", encoding="UTF-8" if fmt.key == "shp" else None)
    except CLIENT_ERRORS as err:
        # a value the database refuses (a bad filter value): a 400, whether in the query of
        # the columns, at the COPY's start or later; nothing was sent, the file is made first
        raise BadRequest(f"the query cannot be applied: {describe(err)}")
    if fmt.key == "shp":
        _zip_shapefile(target, path)


def _zip_shapefile(shp: Path, zip_path: Path) -> None:
    """The Shapefile's files (.shp, .shx, .dbf, .prj, .cpg) in one zip, then removed."""
    parts = sorted(p for p in shp.parent.iterdir() if p.stem == shp.stem and p.suffix != ".zip")
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in parts:
            zf.write(part, part.name)
    for part in parts:
        part.unlink()
