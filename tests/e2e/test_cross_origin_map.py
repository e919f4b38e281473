"""A web map on another origin, with the server's default settings (no CANOPY_CORS_ORIGINS):
a MapLibre page served by a second local HTTP server (another port, so another origin)
fetches a raster's TileJSON, draws its tiles and the plots' vector tiles from Canopy, in
headless Chromium (tests/e2e/browser.py), with no console or CORS error."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.e2e.browser import Browser
from tests.e2e.test_viewer import scene  # noqa: F401  (a public CHM, a plot and a tree)

ROOT = Path(__file__).resolve().parents[2]
MAPLIBRE = ROOT / "web" / "node_modules" / "maplibre-gl" / "dist"

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="icon" href="data:,"><link rel="stylesheet" href="maplibre-gl.css"><script src="maplibre-gl.js"></script></head>
<body style="margin:0"><div id="map" style="width:800px;height:600px"></div><script>
const api = %(api)s;
window.loaded = {raster: 0, vector: 0};
fetch(api + "/rasters/%(raster)s/tilejson.json").then(r => r.json()).then(tj => {
  const map = new maplibregl.Map({container: "map", bounds: tj.bounds, style: {version: 8,
    sources: {chm: {type: "raster", tiles: tj.tiles, tileSize: 256, bounds: tj.bounds},
              plots: {type: "vector", tiles: [api + "/collections/plots/tiles/WebMercatorQuad/{z}/{y}/{x}"]}},
    layers: [{id: "chm", type: "raster", source: "chm"},
             {id: "plots", type: "line", source: "plots", "source-layer": "plots", paint: {"line-color": "#d00"}}]}});
  map.on("sourcedata", e => { if (e.tile && e.sourceId === "chm") loaded.raster++;
                              if (e.tile && e.sourceId === "plots") loaded.vector++; });
  map.on("error", e => console.error("map error: " + (e.error && e.error.message)));
  map.once("idle", () => { window.plots = map.querySourceFeatures("plots", {sourceLayer: "plots"}).length;
                           window.idle = true; });
}).catch(err => console.error("fetch failed: " + err));
</script></body></html>"""


@pytest.fixture()
def other_origin(server, scene, tmp_path):  # noqa: F811
    """Base URL of a page server on another port than Canopy's, serving the map page."""
    if not (MAPLIBRE / "maplibre-gl.js").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT / "web", check=True, timeout=600)
    site = tmp_path / "site"
    site.mkdir()
    for name in ("maplibre-gl.js", "maplibre-gl.css"):
        shutil.copy(MAPLIBRE / name, site / name)
    (site / "index.html").write_text(PAGE % {"api": json.dumps(str(server)), "raster": scene["raster"]})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_maplibre_page_on_another_origin_loads_tilejson_and_tiles(server, other_origin, tmp_path):
    assert other_origin.rsplit(":", 1)[1] != str(server).rsplit(":", 1)[1]

    async def run() -> tuple[dict, list[str], list[dict]]:
        async with Browser(tmp_path / "profile", 900, 700) as page:
            await page.send("Log.enable")            # CORS refusals are reported here, not on the console
            await page.goto(f"{other_origin}/index.html")
            await page.wait("window.idle === true", 120, what="the map to load its tiles")
            state = await page.eval("({loaded: window.loaded, plots: window.plots})")
            logged = [e["params"]["entry"] for e in page.events if e.get("method") == "Log.entryAdded"
                      and e["params"]["entry"]["level"] == "error"]    # not the software GL's warnings
            failed = [e["params"] for e in page.events if e.get("method") == "Network.loadingFailed"]
            return state, page.console, [*logged, *failed]

    state, console, errors = asyncio.run(run())
    assert console == [] and errors == [], (console, errors)
    assert state["loaded"]["raster"] > 0 and state["loaded"]["vector"] > 0, state
    assert state["plots"] > 0, state               # the plot's outline was read from the vector tiles
