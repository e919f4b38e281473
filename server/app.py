"""create_app(): Canopy's Flask application with pygeoapi's blueprint mounted in it."""

from __future__ import annotations

import importlib

from flask import Flask, request

from . import auth, cors, errors, exports, features, health, inputs, jobs, landing, logs, pygeoapi_speedups, uploads, tiles
from . import extents, field_plots, metrics, pages
from .pygeoapi_config import prepare
from .area_models import views as area_models_views
from .runs import views as runs_views
from .settings import Settings, get_settings

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "cross-origin",
}


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    missing = [name for name, value in (("DATABASE_URL", settings.database_url),
                                        ("REDIS_URL", settings.redis_url)) if not value]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} must be set (`make run` sets them for you)")
    logs.configure(settings.log_level)
    pygeoapi_config, _ = prepare(settings)
    flask_app = importlib.import_module("pygeoapi.flask_app")  # reads the files prepare() wrote
    pygeoapi_speedups.apply()

    app = Flask("canopy", static_folder=None)   # /static is pygeoapi's (its CSS, logo)
    app.config["CANOPY_SETTINGS"] = settings
    app.config["PYGEOAPI_CONFIG"] = pygeoapi_config
    app.url_map.strict_slashes = False
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)
    logs.register(app)
    metrics.register(app)       # counts every request by route template; serves /metrics
    errors.register(app)
    cors.register(app)          # preflights answered before any check; CORS headers on every answer
    inputs.register(app)        # the `id` converter before any route; URL and body checks before any view
    auth.register(app, settings)  # sets g.principal before the features layer reads it
    features.register(app)      # before pygeoapi: its /conformance and PATCH take precedence
    exports.register(app)       # after the features layer's checks: f=gpkg|shp|fgb|csv on items
    app.register_blueprint(health.bp)
    landing.register(app)
    pages.register(app)         # /static/vendor (bundled page assets), scan reports
    app.register_blueprint(jobs.views.bp)   # before pygeoapi: execution and /jobs run on Huey
    app.register_blueprint(uploads.views.bp)
    app.register_blueprint(runs_views.bp)
    app.register_blueprint(area_models_views.bp)
    app.register_blueprint(field_plots.bp)
    extents.register(app)       # true extents into pygeoapi's /collections
    app.register_blueprint(tiles.bp)
    app.register_blueprint(flask_app.BLUEPRINT)

    @app.after_request
    def _security_headers(response):
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        # answers depend on the token: a cache keyed by URL alone (QGIS's is) must not mix them
        response.vary.add("Authorization")
        if "Authorization" in request.headers and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "private"
        return response

    return app
