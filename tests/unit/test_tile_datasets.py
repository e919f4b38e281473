"""Open tile datasets shared by request threads: eviction never closes a dataset that
another request is reading (a cache of one, many threads, several COGs)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from server.settings import get_settings
from server.tiles import datasets, tms as tms_mod


def _cog(path: Path, value: float) -> Path:
    profile = {"driver": "GTiff", "width": 256, "height": 256, "count": 1, "dtype": "float32",
               "crs": "EPSG:3857", "transform": from_origin(0, 2560, 10, 10), "tiled": True,
               "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, 256, 256), value, dtype="float32"))
    return path


@pytest.fixture()
def one_slot(monkeypatch):
    datasets.clear()
    monkeypatch.setenv("CANOPY_TILE_DATASETS", "1")
    get_settings.cache_clear()
    yield
    datasets.clear()
    get_settings.cache_clear()


def test_eviction_never_closes_a_dataset_being_read(tmp_path, one_slot):
    paths = [_cog(tmp_path / f"r{i}.tif", float(i + 1)) for i in range(4)]
    tms = tms_mod.get_tms("WebMercatorQuad")
    errors, reads = [], []

    def work(n: int) -> None:
        for k in range(40):
            i = (n + k) % len(paths)
            try:
                with datasets.dataset(paths[i], "v1", tms) as entry:
                    data = entry.reader.read(indexes=1, max_size=32)
                    reads.append((i, float(data.data.mean())))
            except Exception as err:          # a closed dataset: RasterioIOError, ValueError, …
                errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(reads) == 8 * 40
    assert all(mean == i + 1 for i, mean in reads)          # each read saw its own file
    assert len(datasets._open) == 1                          # still a cache of one


def test_an_evicted_dataset_is_closed_once_its_last_reader_leaves(tmp_path, one_slot):
    a, b = _cog(tmp_path / "a.tif", 1.0), _cog(tmp_path / "b.tif", 2.0)
    tms = tms_mod.get_tms("WebMercatorQuad")
    with datasets.dataset(a, "v1", tms) as first:
        with datasets.dataset(b, "v1", tms) as second:       # evicts `a` while it is read
            assert not first.reader.dataset.closed
            assert float(first.reader.read(indexes=1, max_size=16).data.mean()) == 1.0
            assert float(second.reader.read(indexes=1, max_size=16).data.mean()) == 2.0
    assert first.reader.dataset.closed and not second.reader.dataset.closed
