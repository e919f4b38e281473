"""Each scan feature links its printable report (`rel=describedby`, text/html), in
/collections/scans/items and /collections/scans/items/{id} as GeoJSON: a client that
finds a scan finds its report (pygeoapi keeps links a feature carries)."""

from __future__ import annotations

import json
import re

from flask import Flask, Response, current_app, request

from ..features import GEOJSON_TYPES, media_type

_SCANS = re.compile(r"^/collections/scans/items(?:/(\d+))?/?$")


def report_link(base: str, scan_id) -> dict:
    return {"rel": "describedby", "type": "text/html", "title": "Printable report",
            "href": f"{base}/scans/{scan_id}/report"}


def register(app: Flask) -> None:
    @app.after_request
    def _scan_report_links(response: Response) -> Response:
        if request.method != "GET" or response.status_code != 200 or not _SCANS.match(request.path) \
                or media_type(response) not in GEOJSON_TYPES or response.is_streamed:
            return response
        base = current_app.config["CANOPY_SETTINGS"].public_url
        body = json.loads(response.get_data())
        features = body.get("features") if body.get("type") == "FeatureCollection" else [body]
        for feature in features or []:
            if isinstance(feature, dict) and feature.get("id") is not None:
                feature.setdefault("links", []).append(report_link(base, feature["id"]))
        response.set_data(json.dumps(body))
        return response
