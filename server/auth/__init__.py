"""Authentication and authorization: tokens, users, projects, and the access policy."""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

from ..settings import Settings
from . import pat, tokens, views


def register(app: Flask, settings: Settings) -> None:
    tokens.configure(app, settings)
    app.before_request(tokens.authenticate_request)
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url   # shared by every worker and machine
    views.limiter.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(pat.bp)
    if settings.cors_origins:
        CORS(app, origins=list(settings.cors_origins), supports_credentials=False,
             allow_headers=["Authorization", "Content-Type", "If-Match", "Tus-Resumable", "Upload-Length",
                            "Upload-Offset", "Upload-Metadata", "Upload-Checksum", "Prefer"],
             expose_headers=["ETag", "Location", "Content-Crs", "Upload-Offset", "Upload-Length",
                             "Tus-Resumable", "X-Request-Id"])
