"""create_app(): Canopy's Flask application with pygeoapi's blueprint mounted in it."""

from __future__ import annotations

import importlib

from flask import Flask

from . import auth, errors, features, health, inputs, jobs, landing, logs, pygeoapi_speedups, uploads, tiles
from .pygeoapi_config import prepare
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

    app = Flask("canopy")
    app.config["CANOPY_SETTINGS"] = settings
    app.config["PYGEOAPI_CONFIG"] = pygeoapi_config
    app.url_map.strict_slashes = False
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)
    logs.register(app)
    errors.register(app)
    inputs.register(app)        # the `id` converter before any route; URL and body checks before any view
    auth.register(app, settings)  # sets g.principal before the features layer reads it
    features.register(app)      # before pygeoapi: its /conformance and PATCH take precedence
    app.register_blueprint(health.bp)
    landing.register(app)
    app.register_blueprint(jobs.views.bp)   # before pygeoapi: execution and /jobs run on Huey
    app.register_blueprint(uploads.views.bp)
    app.register_blueprint(tiles.bp)
    app.register_blueprint(flask_app.BLUEPRINT)

    @app.after_request
    def _security_headers(response):
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    return app
