"""Jobs: OGC API - Processes execution on Huey workers, with state kept in PostGIS."""

from . import views  # noqa: E402,F401  (the blueprint)
