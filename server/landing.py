"""Links from pygeoapi's landing page to what Canopy adds (auth, projects, uploads,
health), so every route is discoverable from `/` as from the OpenAPI document."""

from __future__ import annotations

import json

from flask import Flask, Response, current_app, request

_EXTRA = [("auth", "/auth/token", "application/json", "Sign in (POST username and password for tokens)"),
          ("projects", "/projects", "application/json", "Projects and their members"),
          ("uploads", "/uploads", "application/json", "Resumable uploads of LAS/LAZ scans (tus 1.0.0)"),
          ("area-models", "/area-models", "application/json", "Area-based models of plot attributes (fit-area-model)"),
          ("http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes", "/tileMatrixSets", "application/json",
           "Tile matrix sets"),
          ("viewer", "/viewer", "text/html", "Web map of plots, scans, trees, crowns and rasters"),
          ("health", "/healthz", "application/json", "Liveness"),
          ("readiness", "/readyz", "application/json", "Readiness: database, Redis and storage")]


def register(app: Flask) -> None:
    @app.after_request
    def _landing_links(response: Response) -> Response:
        if request.path != "/" or response.status_code != 200 or \
                "json" not in (response.headers.get("Content-Type") or ""):
            return response
        base = current_app.config["CANOPY_SETTINGS"].public_url
        body = json.loads(response.get_data())
        body.setdefault("links", []).extend(
            {"rel": rel, "href": f"{base}{path}", "type": media, "title": title} for rel, path, media, title in _EXTRA)
        response.set_data(json.dumps(body))
        return response
