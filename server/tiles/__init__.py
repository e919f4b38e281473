"""Map tiles for every raster (OGC API - Tiles, TileJSON, WMTS, COG download), vector
tiles of the feature tables (MVT from PostGIS) and the web map viewer.

`bp` is the one blueprint the app registers; `openapi_paths.PATHS` documents it and
`CONFORMANCE` lists the OGC conformance classes it implements.
"""

from .metadata import CONFORMANCE
from .views import bp

__all__ = ["bp", "CONFORMANCE"]
