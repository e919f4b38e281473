"""Exports of collections as GeoPackage, zipped Shapefile, FlatGeobuf and flat CSV
(views: the items endpoint's `f=`/Accept; writer: GDAL through pyogrio; columns:
the flat table every format shares; products: one run's products as a zip)."""

from __future__ import annotations

from flask import Flask

from .products import bp
from .views import export_items

PATHS = {"/scans/{scanId}/runs/{runId}/export": {"get": {
    "operationId": "exportRun", "tags": ["runs"],
    "summary": "One run's products in one zip: trees, crowns and plots (GeoPackage and CSV), its rasters (COG) "
               "and manifest.json (parameters, engine version, CRS, sha256 of every file)",
    "parameters": [{"name": "scanId", "in": "path", "required": True, "schema": {"type": "integer"}},
                   {"name": "runId", "in": "path", "required": True, "schema": {"type": "string"}}],
    "responses": {"200": {"description": "the zip", "content": {"application/zip": {
                      "schema": {"type": "string", "format": "binary"}}},
                          "headers": {"Content-Disposition": {"schema": {"type": "string"}}}},
                  "404": {"$ref": "#/components/responses/Problem"}}}}}


def register(app: Flask) -> None:
    """After the Features layer's hooks (they check the query and parse the filter)."""
    app.before_request(export_items)
    app.register_blueprint(bp)
