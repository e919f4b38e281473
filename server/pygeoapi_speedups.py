"""Speed-ups for pygeoapi's per-request work on the Features hot path.

pygeoapi 0.21 builds pyproj CRS objects and a Transformer on every items request
(about 8 ms for a bbox) and serialises every page with the standard json module.
The CRS answers only depend on the URIs, so they are cached; pages are serialised
with orjson (its `default` keeps pygeoapi's fallbacks). pygeoapi offers no hook for
either, hence this small patch of its module-level functions, applied once at start.
"""

from __future__ import annotations

from functools import lru_cache

import orjson
import pyproj


def apply() -> None:
    import pygeoapi.api.itemtypes as itemtypes
    import pygeoapi.util as util

    crs_from_uri = lru_cache(maxsize=64)(util.get_crs_from_uri)

    @lru_cache(maxsize=64)
    def _transformer(from_crs: str, to_crs: str):
        return pyproj.Transformer.from_crs(crs_from_uri(from_crs), crs_from_uri(to_crs)).transform

    def transform_bbox(bbox: list, from_crs: str, to_crs: str) -> list:
        if from_crs == to_crs:
            return list(bbox)
        transform = _transformer(from_crs, to_crs)
        n = len(bbox) // 2
        return list(transform(*bbox[:n]) + transform(*bbox[n:]))

    @lru_cache(maxsize=256)
    def _spec(storage_crs: str | None, crs_list: tuple, query_crs_uri: str | None):
        return _original_spec({"storage_crs": storage_crs, "crs": list(crs_list)} if storage_crs
                              else {"crs": list(crs_list)}, query_crs_uri)

    _original_spec = itemtypes.create_crs_transform_spec

    def create_crs_transform_spec(config: dict, query_crs_uri: str | None = None):
        return _spec(config.get("storage_crs"), tuple(config.get("crs") or ()), query_crs_uri)

    def to_json(dict_: dict, pretty: bool = False) -> str:
        option = orjson.OPT_INDENT_2 if pretty else 0
        return orjson.dumps(dict_, default=util.json_serial,
                            option=option | orjson.OPT_NON_STR_KEYS).decode()

    util.get_crs_from_uri = crs_from_uri
    itemtypes.to_json = to_json
    itemtypes.get_crs_from_uri = crs_from_uri
    itemtypes.transform_bbox = transform_bbox
    itemtypes.create_crs_transform_spec = create_crs_transform_spec
