"""The HTML Canopy serves beside pygeoapi's: the files pygeoapi's pages load (bundled,
at /static/vendor/), the jobs page and the printable report of a scan."""

from __future__ import annotations

from flask import Flask

from . import assets, links, report


def register(app: Flask) -> None:
    app.register_blueprint(assets.bp)
    app.register_blueprint(report.bp)
    links.register(app)
