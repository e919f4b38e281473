"""pygeoapi's configuration and OpenAPI document, generated at every start.

pygeoapi reads both files at import time (PYGEOAPI_CONFIG, PYGEOAPI_OPENAPI), so
`prepare()` renders `pygeoapi-config.yml` with the environment's settings, builds
the OpenAPI document (pygeoapi's, made self-contained and extended with Canopy's
own routes by `server.openapi`), writes both atomically and sets the variables,
all before `pygeoapi.flask_app` is imported.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml

from .settings import ROOT, Settings

_VAR = re.compile(r"\$\{(\w+)\}")
# a light grey 1x1 PNG that Leaflet stretches over every tile when there is no basemap
BLANK_TILE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGN49+4dAAWYAsspex20AAAAAElFTkSuQmCC"


def render_config(settings: Settings) -> dict:
    values = {
        "CANOPY_PUBLIC_URL": settings.public_url,
        "CANOPY_LIMIT_DEFAULT": str(settings.limit_default),
        "CANOPY_LIMIT_MAX": str(settings.limit_max),
        # no basemap unless one is configured: pygeoapi's pages must not reach any other host
        "CANOPY_BASEMAP_URL": settings.basemap_url or BLANK_TILE,
        "CANOPY_BASEMAP_ATTRIBUTION": "'&copy; OpenStreetMap contributors'" if "openstreetmap" in settings.basemap_url
        else "Canopy",
    }
    text = (ROOT / "pygeoapi-config.yml").read_text()
    text = _VAR.sub(lambda m: values.get(m.group(1), os.environ.get(m.group(1), "")), text)
    config = yaml.safe_load(text)
    for resource in config["resources"].values():
        for provider in resource.get("providers", []):
            provider.setdefault("options", {})["count_cap"] = settings.count_cap
    return config


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def prepare(settings: Settings) -> tuple[dict, dict]:
    """Write the rendered config and OpenAPI document; point pygeoapi at them."""
    from .openapi import build_openapi  # imports pygeoapi.openapi, which is safe before flask_app

    from .pages.templates import write_templates

    config = render_config(settings)
    # pygeoapi's templates with their CDN files replaced by bundled copies (server/pages/templates.py)
    config["server"]["templates"] = {"path": str(write_templates(settings.run_dir))}
    document = build_openapi(config, settings)
    config_path = settings.run_dir / "pygeoapi-config.yml"
    openapi_path = settings.run_dir / "openapi.yml"
    _write_atomic(config_path, yaml.safe_dump(config, sort_keys=False))
    _write_atomic(openapi_path, yaml.safe_dump(document, sort_keys=False))
    os.environ["PYGEOAPI_CONFIG"] = str(config_path)
    os.environ["PYGEOAPI_OPENAPI"] = str(openapi_path)
    return config, document
