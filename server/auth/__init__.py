"""Authentication and authorization: tokens, users, projects, and the access policy."""

from __future__ import annotations

from flask import Flask

from ..settings import Settings
from . import pat, tokens, views


def register(app: Flask, settings: Settings) -> None:
    tokens.configure(app, settings)
    app.before_request(tokens.authenticate_request)
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url   # shared by every worker and machine
    views.limiter.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(pat.bp)
