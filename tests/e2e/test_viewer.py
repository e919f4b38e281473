"""The web map viewer in a real browser: headless Chromium (Debian's) opens /viewer on the
real server; the screenshot must show the CHM tiles (viridis, low heights west, high east)
and the plot's red outline where they are."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import psycopg
import pyproj
import pytest
import rasterio
import requests
from PIL import Image
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

ROOT = Path(__file__).resolve().parents[2]
EPSG, X0, Y0, RES, N = 32632, 465000.0, 5215000.0, 0.5, 1000     # 500 m square near 8.55 E, 47.08 N
WIDTH, HEIGHT, PANEL = 1400, 800, 360                              # window; the side panel is 360 px


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("no Chromium: install Debian's `chromium` (scripts/bootstrap.sh does)")


def _ensure_viewer_built() -> None:
    if (ROOT / "server" / "static" / "viewer" / "viewer.js").exists():
        return
    web = ROOT / "web"
    if not (web / "node_modules" / "maplibre-gl").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=web, check=True, timeout=600)
    subprocess.run(["npm", "run", "build"], cwd=web, check=True, timeout=300)


@pytest.fixture(scope="module")
def scene(db_url, tmp_path_factory) -> dict:
    """A public project with a CHM (0 m in the west rising to 40 m in the east) and a plot
    (100 m square) in its middle."""
    root = tmp_path_factory.mktemp("viewer")
    cols = np.tile(np.arange(N, dtype="float32"), (N, 1))
    chm = cols * (40.0 / N)
    profile = dict(driver="GTiff", width=N, height=N, count=1, dtype="float32", crs=f"EPSG:{EPSG}",
                   transform=from_origin(X0, Y0, RES, RES), nodata=-9999.0)
    path = root / "chm.tif"
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(chm, 1)
        with mem.open() as src:
            cog_translate(src, str(path), cog_profiles.get("deflate"), quiet=True)
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    xs, ys = to_ll.transform([X0, X0 + N * RES, X0 + N * RES, X0, X0], [Y0, Y0, Y0 - N * RES, Y0 - N * RES, Y0])
    footprint = {"type": "Polygon", "coordinates": [[list(p) for p in zip(xs, ys)]]}
    cx, cy = X0 + N * RES / 2, Y0 - N * RES / 2
    px, py = to_ll.transform([cx - 50, cx + 50, cx + 50, cx - 50, cx - 50],
                             [cy - 50, cy - 50, cy + 50, cy + 50, cy - 50])
    plot = {"type": "MultiPolygon", "coordinates": [[[list(p) for p in zip(px, py)]]]}
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name, visibility) VALUES ('viewer', 'public') "
                               "RETURNING id").fetchone()[0]
        raster = conn.execute(
            "INSERT INTO rasters (project_id, kind, storage_uri, crs_epsg, resolution_m, footprint) VALUES "
            "(%s, 'chm', %s, %s, %s, ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)) RETURNING id",
            (project, path.as_uri(), EPSG, RES, json.dumps(footprint))).fetchone()[0]
        conn.execute("INSERT INTO plots (project_id, name, geom, metrics) VALUES "
                     "(%s, 'viewer plot', ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), '{\"h_mean\": 20}')",
                     (project, json.dumps(plot)))
        # a tree 20 m east of the centre: column 540, where the CHM is 540 * 40 / 1000 = 21.6 m
        tree_lon, tree_lat = to_ll.transform(cx + 20.25, cy)
        scan = conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, 'viewer scan', 'ready') "
                            "RETURNING id", (project,)).fetchone()[0]
        conn.execute("INSERT INTO trees (scan_id, project_id, geom, height_m) VALUES "
                     "(%s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), 21.25)", (scan, project, tree_lon, tree_lat))
    return {"raster": raster, "tree": (tree_lon, tree_lat)}


def _chromium(profile: Path) -> list[str]:
    return [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
           "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=20000"]


def _screenshot(url: str, out: Path, profile: Path) -> np.ndarray:
    run = subprocess.run(_chromium(profile) + [f"--screenshot={out}", url], capture_output=True, text=True,
                         timeout=180)
    assert out.exists(), run.stderr[-3000:]
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def test_viewer_shows_chm_tiles_and_plot_outlines(server, scene, tmp_path):
    _ensure_viewer_built()
    page = requests.get(f"{server}/viewer", timeout=10)
    assert page.status_code == 200 and "viewer.js" in page.text
    assert requests.get(f"{server}/viewer/viewer.js", timeout=10).status_code == 200

    shot = _screenshot(f"{server}/viewer?raster={scene['raster']}", tmp_path / "viewer.png", tmp_path / "profile")
    (ROOT / ".data").mkdir(exist_ok=True)
    shutil.copy(tmp_path / "viewer.png", ROOT / ".data" / "viewer-screenshot.png")   # to look at
    mapped = shot[:, : WIDTH - PANEL]
    height, width = mapped.shape[:2]
    background = np.array([0xF2, 0xEF, 0xE9])
    is_background = np.abs(mapped - background).sum(-1) < 12

    # The raster is fitted into the map (square, 20 px padding): its middle rows hold CHM pixels.
    band = mapped[height // 2 - 150: height // 2 + 150]
    from rio_tiler.colormap import cmap
    viridis = np.array([cmap.get("viridis")[i][:3] for i in range(256)])
    distance = ((band[..., None, :] - viridis[None, None]) ** 2).sum(-1)
    index = distance.argmin(-1)
    viridis_like = distance.min(-1) < 300
    columns = np.nonzero(viridis_like.mean(0) > 0.8)[0]
    assert len(columns) > 300, f"only {len(columns)} columns of CHM pixels"
    # heights grow eastwards: the colormap index of a column's median pixel rises left to right
    west, east = columns[: len(columns) // 5], columns[-len(columns) // 5:]
    assert np.median(index[:, west]) + 120 < np.median(index[:, east])
    # beside the raster there is only the map's background
    assert is_background[:, : max(1, columns.min() - 30)].mean() > 0.9

    # the plot's outline (#d00000, 3 px) around the raster's centre
    centre_x = (columns.min() + columns.max()) // 2
    red = (mapped[..., 0] > 170) & (mapped[..., 1] < 70) & (mapped[..., 2] < 70)
    ys, xs = np.nonzero(red)
    assert len(xs) > 200, "no plot outline drawn"
    assert abs(np.median(xs) - centre_x) < 40 and abs(np.median(ys) - height // 2) < 60
    # an outline, not a filled square: the plot's inside shows the CHM through a light fill
    assert red[height // 2 - 20: height // 2 + 20, centre_x - 20: centre_x + 20].mean() < 0.05


def test_viewer_popup_shows_plot_metrics_tree_height_and_chm_value(server, scene, tmp_path):
    """Driven over CDP (tests/e2e/browser.py): the page opens the pop-up once the map is drawn."""
    import asyncio
    from tests.e2e.browser import Browser
    _ensure_viewer_built()
    lon, lat = scene["tree"]
    url = f"{server}/viewer?raster={scene['raster']}&popup={lon},{lat}"

    async def dom_when_ready() -> str:
        async with Browser(tmp_path / "profile", WIDTH, HEIGHT) as page:
            await page.goto(url)
            await page.wait("document.body && document.body.dataset.ready === '1' && "
                            "!!document.querySelector('.maplibregl-popup-content')", 90, what="the pop-up")
            return await page.eval("document.documentElement.outerHTML")

    dom = asyncio.run(dom_when_ready())
    popup = dom.split("maplibregl-popup-content", 1)[1]
    assert "viewer plot" in popup and "h_mean" in popup and "<b>20</b>" in popup      # plot metrics
    assert "Height" in popup and "<b>21.3</b> m" in popup, popup[:3000]               # the tree, 0.1 m
    title = f"CHM — raster #{scene['raster']}"                 # a raster of no scan is named by its id
    assert f"{title}: <b>21.60</b>" in popup                                            # the raster value
    # the legend and the layer switcher
    assert "0.0 m" in dom and "40.0 m" in dom
    for name in ("Plots", "Trees", "Crowns", "Scan footprints", title):
        assert name in dom
