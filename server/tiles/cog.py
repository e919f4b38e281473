"""The COG itself, for GDAL (`/vsicurl/`) and QGIS: whole or by HTTP Range (206), with an
ETag from the file's version so `If-None-Match`/`If-Range` work. Werkzeug's conditional
`send_file` implements Range, If-Range and If-None-Match; nothing here is hand-written."""

from __future__ import annotations

from flask import Response, send_file

from .catalog import Raster


def cog_response(raster: Raster) -> Response:
    response = send_file(raster.path, mimetype="image/tiff; application=geotiff; profile=cloud-optimized",
                         conditional=True, etag=f"cog-{raster.id}-{raster.version}",
                         download_name=f"raster-{raster.id}-{raster.kind}.tif", as_attachment=False,
                         max_age=0)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Cache-Control"] = ("public" if raster.public else "private") + ", no-cache"
    return response
