"""The process plugins named in pygeoapi-config.yml, instantiated once per process."""

from __future__ import annotations

from functools import lru_cache

from pygeoapi.plugin import load_plugin

from processes.base import CanopyProcess

from ..pygeoapi_config import render_config
from ..settings import get_settings


@lru_cache(maxsize=1)
def definitions() -> dict[str, dict]:
    config = render_config(get_settings())
    return {name: res for name, res in config["resources"].items() if res.get("type") == "process"}


# processes the job system runs for itself (child jobs), not offered through the API
INTERNAL = {"inventory-tile": {"processor": {"name": "processes.inventory_tile.InventoryTileProcessor"}}}


@lru_cache(maxsize=64)
def processor(process_id: str) -> CanopyProcess:
    definition = definitions().get(process_id) or INTERNAL.get(process_id)
    if definition is None:
        raise KeyError(process_id)
    return load_plugin("process", definition["processor"])
