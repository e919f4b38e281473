"""The COG itself, for GDAL (`/vsicurl/`) and QGIS: whole or by HTTP Range (206), with an
ETag from the file's version so `If-None-Match`/`If-Range` work. Werkzeug's conditional
responses implement Range, If-Range and If-None-Match; nothing here is hand-written. A
local file is sent with `send_file`; an object in S3 is streamed through, fetching only
the requested range."""

from __future__ import annotations

from flask import Response, request, send_file

from ..storage import LocalStorage
from .catalog import Raster

MEDIA = "image/tiff; application=geotiff; profile=cloud-optimized"


def cog_response(raster: Raster) -> Response:
    etag = f"cog-{raster.id}-{raster.version}"
    if isinstance(raster.storage, LocalStorage):
        response = send_file(raster.path, mimetype=MEDIA, conditional=True, etag=etag,
                             download_name=f"raster-{raster.id}-{raster.kind}.tif", as_attachment=False,
                             max_age=0)
    else:
        response = _streamed(raster, etag)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Cache-Control"] = ("public" if raster.public else "private") + ", no-cache"
    return response


def _streamed(raster: Raster, etag: str) -> Response:
    response = Response(mimetype=MEDIA, direct_passthrough=True)
    response.set_etag(etag)
    response.content_length = raster.size
    response.headers["Content-Disposition"] = f'inline; filename="raster-{raster.id}-{raster.kind}.tif"'
    response.make_conditional(request, accept_ranges=True, complete_length=raster.size)
    if response.status_code == 304:
        return response
    start, stop = (0, raster.size)
    if response.status_code == 206:
        start, stop = response.content_range.start, response.content_range.stop
    response.response = raster.storage.read(raster.key, start, stop)   # only the bytes asked for
    return response
