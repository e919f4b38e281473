"""The OpenAPI description of the report pages (server/pages/report.py)."""

from __future__ import annotations

_SCAN_ID = {"name": "scanId", "in": "path", "required": True, "description": "the scan's id",
            "schema": {"type": "string", "pattern": "^[0-9]+$"}}
_404 = {"description": "no such scan, or not readable by the caller"}

PATHS = {
    "/scans/{scanId}/report": {"get": {
        "operationId": "getScanReport", "tags": ["scans"],
        "summary": "The scan's printable report (HTML): points, density, area, ground share, stems/ha, canopy "
                   "cover, height and crown-diameter histograms, CHM and DTM quicklooks, plot metrics",
        "parameters": [_SCAN_ID],
        "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                      "404": _404}}},
    "/scans/{scanId}/report/{kind}.png": {"get": {
        "operationId": "getScanQuicklook", "tags": ["scans"],
        "summary": "A quicklook (at most 512 px) of the scan's current CHM or hillshaded DTM",
        "parameters": [_SCAN_ID, {"name": "kind", "in": "path", "required": True,
                                  "schema": {"type": "string", "enum": ["chm", "dtm"]}}],
        "responses": {"200": {"description": "PNG picture", "content": {"image/png": {}}}, "404": _404}}},
}
