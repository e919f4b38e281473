"""/static/vendor/…: Bootstrap, Leaflet and Swagger UI for pygeoapi's pages, bundled from
npm into server/static/vendor by `make web` (web/pygeoapi-assets.mjs). pygeoapi's own
blueprint serves the rest of /static (its CSS, logo and favicon) from its package."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory

from ..errors import NotFound

VENDOR = Path(__file__).resolve().parent.parent / "static" / "vendor"
bp = Blueprint("page_assets", __name__)


@bp.get("/static/vendor/<path:filename>")
def vendor(filename: str):
    if not (VENDOR / "bootstrap").is_dir():
        raise NotFound("the page assets are not built: run `make web` (npm) to bundle them")
    return send_from_directory(VENDOR, filename, max_age=86400)
