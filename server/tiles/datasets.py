"""COGs kept open per worker process: a bounded LRU of rio-tiler Readers, and GDAL's caches.

Opening a GeoTIFF costs a few milliseconds of header parsing per tile; a worker
keeps the most recently used datasets open instead (CANOPY_TILE_DATASETS, default 32).
A reader is keyed by the file's version, so a rewritten file is reopened. Readers
are not thread-safe: each entry has a lock, held while a tile is read from it.
Entries are reference counted: eviction takes an entry out of the cache at once but
closes its reader only when the last request using it has left, so a request never
reads a dataset closed under it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import morecantile
from rasterio.errors import EnvError
from rio_tiler.io import Reader

from ..settings import get_settings

# GDAL reads these config options from the environment at first use; set them before that.
_GDAL_DEFAULTS = {
    "GDAL_CACHEMAX": "256",                       # MB of block cache per worker
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing for sidecar files
    "GDAL_NUM_THREADS": "1",                      # one tile per request: no decode thread pool
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": "16777216",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
}
for _key, _value in _GDAL_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

@dataclass
class OpenDataset:
    reader: Reader
    lock: threading.Lock = field(default_factory=threading.Lock)
    memo: dict = field(default_factory=dict)   # per-version derived facts (statistics, limits)
    users: int = 0                              # requests holding it (changed under _guard)
    evicted: bool = False                       # out of the cache: closed when users drops to 0


_open: OrderedDict[tuple[str, str, str], OpenDataset] = OrderedDict()
_guard = threading.Lock()


def _get(path: Path, version: str, tms: morecantile.TileMatrixSet) -> OpenDataset:
    """The entry for (path, version, tms) with one more user; the caller must _release it."""
    key = (str(path), version, tms.id)
    with _guard:
        entry = _open.get(key)
        if entry is not None:
            _open.move_to_end(key)
            entry.users += 1
            return entry
    fresh = OpenDataset(Reader(str(path), tms=tms))
    idle = []
    with _guard:
        entry = _open.setdefault(key, fresh)      # another thread may have opened it meanwhile
        _open.move_to_end(key)
        entry.users += 1
        while len(_open) > get_settings().tile_datasets:
            old = _open.popitem(last=False)[1]
            old.evicted = True
            if old.users == 0:                    # else its last user closes it
                idle.append(old)
    if entry is not fresh:
        _close(fresh.reader)
    for old in idle:
        _close(old.reader)
    return entry


def _close(reader: Reader) -> None:
    """Close a reader from any thread. rasterio ties the GDAL environment a dataset
    opened to the opening thread; closing it from another one releases the GDAL handle
    and then raises EnvError while leaving that environment, which is harmless here."""
    try:
        reader.close()
    except EnvError:
        pass


def _release(entry: OpenDataset) -> None:
    with _guard:
        entry.users -= 1
        close = entry.evicted and entry.users == 0
    if close:
        _close(entry.reader)


@contextmanager
def dataset(path: Path, version: str, tms: morecantile.TileMatrixSet) -> Iterator[OpenDataset]:
    """The open dataset of `path` at `version` for tiling in `tms`, locked for this thread."""
    entry = _get(path, version, tms)
    try:
        with entry.lock:
            yield entry
    finally:
        _release(entry)


def clear() -> None:
    idle = []
    with _guard:
        while _open:
            _, old = _open.popitem()
            old.evicted = True
            if old.users == 0:
                idle.append(old)
    for old in idle:
        _close(old.reader)
