"""A forester's first hour, in a real browser: headless Chromium driven over CDP through the
web app on the real stack (gunicorn, PostGIS, Redis, a Huey worker), with access tokens that
live 12 seconds so that the page has to renew them as it goes.

Journey: sign in; upload two simulated LAZ tiles dropped on the page as one scan (paused in the middle of the
first and resumed); a truncated LAZ refused with the server's reason; forest-inventory run
from the form generated from its process description; its progress seen moving; the CHM and
tree symbols drawn (pixels checked); legends from the real statistics; a pop-up with units and
rounded numbers; downloads (GeoJSON of the trees, the CHM's COG) saved by the browser; the
token renewed without a reload all along, and a clear "signed out" state once the session is
revoked, with the public layers still on the map. Screenshots go to /tmp/webapp-shots/."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
import requests
from PIL import Image
from pyproj import Transformer

from processes.lidar.synthetic import make_forest, write_las
from tests.conftest import PASSWORD, Workers, running_server
from tests.e2e.browser import Browser
from tests.e2e.test_viewer import _ensure_viewer_built

SHOTS = Path("/tmp/webapp-shots")
TOKEN_SECONDS = 12
WIDTH, HEIGHT, PANEL = 1400, 900, 360
EPSG = 32610
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def stack(services, tmp_path_factory):
    """A server of its own (short-lived access tokens) and one worker on its storage."""
    run_dir = tmp_path_factory.mktemp("webapp")
    with running_server(services, run_dir, CANOPY_ACCESS_TOKEN_SECONDS=str(TOKEN_SECONDS),
                        CANOPY_LOGIN_RATE="100 per minute") as base:
        workers = Workers(services, run_dir)
        workers.start(1)
        try:
            yield base
        finally:
            workers.stop_all()


@pytest.fixture(scope="module")
def forest_files(tmp_path_factory):
    """Two LAZ tiles (west and east halves of one simulated forest) and a truncated LAZ."""
    out = tmp_path_factory.mktemp("webapp-files")
    points, truth = make_forest("open", size=100, seed=7, density=14)
    x_mid = (points.x.min() + points.x.max()) / 2
    west = write_las(out / "block7_west.laz", points.subset(points.x < x_mid), crs=f"EPSG:{EPSG}")
    east = write_las(out / "block7_east.laz", points.subset(points.x >= x_mid), crs=f"EPSG:{EPSG}")
    bad = out / "broken.laz"
    data = west.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    return {"west": west, "east": east, "bad": bad, "points": len(points), "bounds":
            (points.x.min(), points.y.min(), points.x.max(), points.y.max())}


@pytest.fixture(scope="module")
def people(db_url, stack, forest_files):
    """A private project the forester edits, and a public one with a plot over the same forest."""
    from argon2 import PasswordHasher
    x0, y0, x1, y1 = forest_files["bounds"]
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ring = [to_ll.transform(cx + dx, cy + dy) for dx, dy in ((-45, -45), (45, -45), (45, 45), (-45, 45), (-45, -45))]
    plot = {"type": "MultiPolygon", "coordinates": [[[list(p) for p in ring]]]}
    name = f"forester{int(time.time() * 1000) % 10**8}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        private = conn.execute("INSERT INTO projects (name, visibility) VALUES ('Block 7 (private)', 'private') "
                               "RETURNING id").fetchone()[0]
        public = conn.execute("INSERT INTO projects (name, visibility) VALUES ('Public plots', 'public') "
                              "RETURNING id").fetchone()[0]
        uid = conn.execute("INSERT INTO users (username, password_hash, role) VALUES (%s, %s, 'analyst') "
                           "RETURNING id", (name, PasswordHasher().hash(PASSWORD))).fetchone()[0]
        conn.execute("INSERT INTO project_members (project_id, user_id, role) VALUES (%s, %s, 'editor')",
                     (private, uid))
        conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, 'public plot', "
                     "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326))", (public, json.dumps(plot)))
        inner = [to_ll.transform(cx + dx, cy + dy) for dx, dy in ((-20, -20), (20, -20), (20, 20), (-20, 20), (-20, -20))]
        conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, 'plot A', "
                     "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326))",
                     (private, json.dumps({"type": "MultiPolygon", "coordinates": [[[list(p) for p in inner]]]})))
    return {"username": name, "private": private, "public": public, "center": to_ll.transform(cx, cy)}


def _token(stack, username) -> dict:
    r = requests.post(f"{stack}/auth/token", json={"username": username, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)[:, : WIDTH - PANEL]


def _viridis_mask(img: np.ndarray) -> np.ndarray:
    from rio_tiler.colormap import cmap
    viridis = np.array([cmap.get("viridis")[i][:3] for i in range(0, 256, 4)])
    small = img[::2, ::2]
    distance = ((small[..., None, :] - viridis[None, None]) ** 2).sum(-1).min(-1)
    return distance < 300


async def _run_form(page, process: str, what: str) -> str:
    """Click Run and return the id of the job it added to the jobs list (the list also holds
    other tests' jobs of public projects, so the new one is the one not listed before)."""
    listed = json.dumps(await page.eval("[...document.querySelectorAll('#jobs li[data-job]')].map(li => li.dataset.job)"))
    await page.click("#proc-run")
    return await page.wait("[...document.querySelectorAll('#jobs li[data-job]')].find(li => "
                           f"li.textContent.includes('{process}') && !{listed}.includes(li.dataset.job))"
                           "?.dataset.job", 30, what=what)


async def _journey(stack, people, files, db_url, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    log_start = Path(stack.log).stat().st_size
    async with Browser(tmp_path / "profile", WIDTH, HEIGHT) as page:
        await page.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        await page.goto(f"{stack}/viewer")
        await page.wait("document.body.dataset.ready === '1'", 90, what="the map to load")
        await page.eval("window.__sameDocument = 'yes'")        # a reload would lose it
        # signed out at first: the public plot is listed, the private project is not
        assert await page.eval("document.getElementById('signedout').hidden") is False
        await page.screenshot(SHOTS / "01-signed-out.png")

        # -- sign in ---------------------------------------------------------------------------------
        await page.fill("#signin input[name=username]", people["username"])
        await page.fill("#signin input[name=password]", PASSWORD)
        await page.eval("document.querySelector('#signin').requestSubmit()")
        await page.wait("document.body.dataset.signedIn === '1'", 30, what="sign-in")
        who = await page.wait("document.querySelector('#whoami span').textContent", 10)
        assert people["username"] in who and "analyst" in who
        await page.wait(f"!!document.querySelector('#projects li[data-project=\"{people['private']}\"]')", 20,
                        what="the private project listed")
        first_exp = int(await page.eval("document.body.dataset.tokenExp"))
        await page.screenshot(SHOTS / "02-signed-in.png")

        # -- upload two tiles as one scan, with a pause in the middle of the first ------------------------
        await page.eval("document.getElementById('sec-upload').open = true")
        await page.eval(f"document.getElementById('up-project').value = '{people['private']}'")
        await page.drop_files("#dropzone", [files["west"], files["east"]])     # dragged from a file manager
        await page.wait("!document.getElementById('up-start').disabled", 10, what="the dropped files")
        assert (await page.eval("document.getElementById('up-pending').textContent")).startswith(
            "2 file(s) ready as one scan: ")
        await page.fill("#up-name", "Block 7 2026")
        # a slow link, so that the upload is still going when "Pause" is pressed
        await page.send("Network.emulateNetworkConditions", offline=False, latency=20,
                        downloadThroughput=-1, uploadThroughput=400 * 1024)
        await page.click("#up-start")
        first = "#up-list li[data-file='block7_west.laz']"
        await page.wait(f"Number(document.querySelector(\"{first}\")?.dataset.progress || 0) > 15", 60,
                        every=0.05, what="the first upload to be under way")
        await page.click(f"{first} .up-toggle")
        await page.wait(f"document.querySelector(\"{first}\").dataset.state === 'paused'", 10)
        url = await page.wait(f"document.querySelector(\"{first}\").dataset.url", 10)
        await page.screenshot(SHOTS / "03-upload-paused.png")
        token = _token(stack, people["username"])["access_token"]
        head = requests.head(url, headers={**TUS, "Authorization": f"Bearer {token}"}, timeout=10)
        offset, length = int(head.headers["Upload-Offset"]), int(head.headers["Upload-Length"])
        assert 0 < offset < length, (offset, length)          # the server holds part of it
        await asyncio.sleep(1.5)
        head = requests.head(url, headers={**TUS, "Authorization": f"Bearer {token}"}, timeout=10)
        assert int(head.headers["Upload-Offset"]) == offset    # nothing moves while paused
        await page.send("Network.emulateNetworkConditions", offline=False, latency=0,
                        downloadThroughput=-1, uploadThroughput=-1)
        await page.click(f"{first} .up-toggle")               # resume
        await page.wait("[...document.querySelectorAll('#up-list li')].filter(li => li.dataset.state === 'done')"
                        ".length === 2", 120, what="both uploads to finish")
        assert await page.eval(f"document.querySelector(\"{first}\").dataset.resumed") == "1"
        scan_ids = await page.eval("[...document.querySelectorAll('#up-list li')].map(li => li.dataset.scan)")
        assert len(set(scan_ids)) == 1 and scan_ids[0], scan_ids   # one scan for both files
        scan_id = int(scan_ids[0])
        with psycopg.connect(db_url) as conn:
            n_files, n_points = conn.execute("SELECT count(*), sum(point_count) FROM scan_files WHERE scan_id = %s",
                                             (scan_id,)).fetchone()
        assert n_files == 2 and n_points == files["points"]
        await page.screenshot(SHOTS / "04-uploaded.png")

        # -- a truncated file is refused, with the server's reason -----------------------------------
        await page.set_files("#up-files", [files["bad"]])
        await page.fill("#up-name", "broken")
        await page.eval("document.getElementById('up-scan').value = ''")
        await page.click("#up-start")
        bad = "#up-list li[data-file='broken.laz']"
        await page.wait(f"document.querySelector(\"{bad}\")?.dataset.state === 'refused'", 60,
                        what="the bad file to be refused")
        message = await page.eval(f"document.querySelector(\"{bad} .up-status\").textContent")
        assert message.startswith("refused:") and "not a valid LAS/LAZ file" in message, message
        await page.screenshot(SHOTS / "05-upload-refused.png")

        # the scan is ingested (two ingest jobs in the jobs list) and listed as ready, with its CRS
        scan_li = f"#scans li[data-scan='{scan_id}']"
        await page.wait(f"document.querySelector(\"{scan_li}\")?.dataset.status === 'ready'", 180, every=1,
                        what="the scan to be ingested")
        assert f"EPSG:{EPSG}" in await page.eval(f"document.querySelector(\"{scan_li}\").textContent")
        assert await page.eval(f"document.querySelector(\"{scan_li}\").dataset.crsUnknown") is None
        # (the scan is ready once a file is ingested: the other file's job may still be finishing)
        ingests = await page.wait("(() => { const s = [...document.querySelectorAll('#jobs li[data-job]')]"
                                  ".filter(li => li.textContent.includes('ingest-scan')).map(li => li.dataset.status);"
                                  " return s.length >= 2 && s.every(x => x !== 'running' && x !== 'accepted') && s; })()",
                                  60, what="both ingest jobs to end")
        assert all(s == "successful" for s in ingests), ingests

        # -- forest-inventory from the form generated from its description ----------------------------
        await page.click(f"{scan_li} .scan-run")
        await page.wait("document.body.dataset.formReady === 'forest-inventory'", 20)
        fields = await page.eval("[...document.querySelectorAll('#proc-fields [name]')].map(e => e.name)")
        for name in ("scan", "resolution", "dtm_resolution", "metrics_resolution", "trees.algorithm",
                     "crowns.algorithm", "dtm.algorithm", "noise.algorithm"):
            assert name in fields, (name, fields)
        bounds = await page.eval("(() => { const e = document.querySelector('#proc-fields [name=resolution]');"
                                 " return [e.value, e.placeholder, e.min, e.max]; })()")
        # no default (the CHM cell is chosen from the scan): left empty, "auto"; bounds from the description
        assert bounds == ["", "auto", "0.1", "10"], bounds
        crowns = await page.eval("[...document.querySelector('#proc-fields [name=\"crowns.algorithm\"]').options]"
                                 ".map(o => o.value)")
        assert {"watershed", "dalponte2016"} <= set(crowns), crowns
        await page.eval(f"document.querySelector('#proc-fields [name=scan]').value = '{scan_id}'")
        await page.fill("#proc-fields [name=metrics_resolution]", "10")
        await page.screenshot(SHOTS / "06-process-form.png")
        job_id = await _run_form(page, "forest-inventory", "the job in the list")
        job_li = f"#jobs li[data-job='{job_id}']"
        await page.wait(f"Number(document.querySelector(\"{job_li}\").dataset.progress) > 0 && "
                        f"document.querySelector(\"{job_li}\").dataset.status === 'running'", 120, every=0.1,
                        what="the job to run")
        await page.screenshot(SHOTS / "07-job-running.png")
        await page.wait(f"['successful', 'failed'].includes(document.querySelector(\"{job_li}\").dataset.status)",
                        600, every=0.5, what="the job to finish")
        status = await page.eval(f"document.querySelector(\"{job_li}\").dataset.status")
        message = await page.eval(f"document.querySelector(\"{job_li} .job-message\").textContent")
        assert status == "successful", message
        seen = [int(v) for v in (await page.eval(f"document.querySelector(\"{job_li}\").dataset.progressSeen"))
                .split(",")]
        assert len(set(seen)) >= 4 and seen == sorted(seen) and seen[-1] == 100, seen   # progress moved, live
        with psycopg.connect(db_url) as conn:
            inputs = conn.execute("SELECT inputs FROM jobs WHERE identifier = %s", (job_id,)).fetchone()[0]
            chm_id, chm_stats = conn.execute("SELECT id, stats FROM rasters WHERE scan_id = %s AND kind = 'chm'",
                                             (scan_id,)).fetchone()
            n_trees = conn.execute("SELECT count(*) FROM trees WHERE scan_id = %s", (scan_id,)).fetchone()[0]
        inputs = inputs.get("inputs", inputs)
        assert inputs["scan"] == scan_id and inputs["metrics_resolution"] == 10     # what the form sent
        assert n_trees > 20

        # -- the new layers: CHM with its legend, grid metrics with a band picker, trees ---------------
        await page.wait(f"(document.body.dataset.layersFor || '').includes('{job_id}')", 60,
                        what="the job's layers")
        legend = await page.eval(f"document.querySelector('#legend .legend-block[data-raster=\"{chm_id}\"]')"
                                 ".textContent")
        top = int(np.ceil(chm_stats["max"]))
        assert f"{top:.1f} m" in legend and f"to {chm_stats['max']:.1f} m" in legend, (legend, chm_stats)
        picker = "#legend select.band-picker"
        options = await page.eval(f"[...document.querySelector('{picker}').options].map(o => o.textContent)")
        assert any(o.startswith("zmean (m)") for o in options) and any(o.startswith("cover (%)") for o in options)
        await page.eval(f"(() => {{ const s = document.querySelector('{picker}'); s.value = String([...s.options]"
                        ".findIndex(o => o.textContent.startsWith('cover')) + 1); s.dispatchEvent(new Event('change'));"
                        " })()")
        await page.wait(f"document.querySelector('{picker}').parentElement.textContent.includes('cover')"
                        f" && document.querySelector('{picker}').parentElement.querySelector('.legend-scale')"
                        ".textContent.includes('%')", 20, what="the cover legend in %")
        await page.wait("canopy.map.loaded() && canopy.map.areTilesLoaded()", 60, what="the tiles")
        await asyncio.sleep(1.0)
        png = await page.screenshot(SHOTS / "08-results-chm-trees.png")
        img = _pixels(png)
        chm = _viridis_mask(img)
        assert chm.sum() > 20000, f"only {chm.sum()} CHM pixels"
        ys, xs = np.nonzero(chm)
        box = img[ys.min() * 2: ys.max() * 2, xs.min() * 2: xs.max() * 2]
        white = (box.min(-1) > 245).sum()        # tree symbols: white crowns over the CHM
        assert white > 500, f"only {white} tree-symbol pixels"

        # a pop-up at the forest's centre: units, rounded numbers, no 15-digit floats
        lon, lat = people["center"]
        html = await page.eval(f"canopy.showPopup({{lng: {lon}, lat: {lat}}}, canopy.map.project([{lon}, {lat}]))")
        assert "public plot" in html and f"CHM — scan #{scan_id} “Block 7 2026” — run {job_id[:8]}" in html, html
        assert "Plot plot A" in html and re.search(r'title="highest return height">zmax</td><td><b>\d+\.\d{1,2}</b> m', html)
        assert re.search(r'>cover</td><td><b>[\d.]+</b> %', html) and '<svg class="lad-chart"' in html, html
        assert not re.search(r"\d\.\d{5,}", html), html
        assert re.search(r"CHM — scan #\d+[^:<]*: <b>\d+\.\d{1,2}</b> m", html), html
        await page.screenshot(SHOTS / "09-popup.png")

        # -- downloads: the trees as GeoJSON and the CHM's COG, saved by the browser -------------------
        await page.eval("document.getElementById('sec-downloads').open = true")
        await page.wait(f"!!document.querySelector('#downloads li[data-scan=\"{scan_id}\"]')", 20)
        links = await page.eval(f"[...document.querySelectorAll('#downloads li[data-scan=\"{scan_id}\"] a')]"
                                ".map(a => a.textContent)")
        for fmt in ("GeoJSON", "CSV", "GeoPackage", "Shapefile", "FlatGeobuf", "CHM COG", "DTM COG"):
            assert fmt in links, (fmt, links)
        await page.click(f"#downloads li[data-scan='{scan_id}'] a[data-download='trees-scan{scan_id}.geojson']")
        await page.wait(f"document.getElementById('download-status').dataset.file === 'trees-scan{scan_id}.geojson'"
                        " && document.getElementById('download-status').textContent.includes('HTTP')", 60)
        assert await page.eval("document.getElementById('download-status').dataset.status") == "200"
        saved = downloads / f"trees-scan{scan_id}.geojson"
        for _ in range(100):
            if saved.exists() and saved.stat().st_size:
                break
            await asyncio.sleep(0.1)
        trees = json.loads(saved.read_text())
        assert len(trees["features"]) == n_trees and trees["features"][0]["properties"]["scan_id"] == scan_id
        await page.click(f"#downloads li[data-scan='{scan_id}'] a[data-download='chm-{chm_id}.tif']")
        cog = downloads / f"chm-{chm_id}.tif"
        for _ in range(200):
            if cog.exists() and cog.stat().st_size:
                break
            await asyncio.sleep(0.1)
        assert cog.read_bytes()[:4] in (b"II*\x00", b"MM\x00*")
        assert await page.eval("document.getElementById('download-status').dataset.status") == "200"
        await page.screenshot(SHOTS / "10-downloads.png")

        # -- the private scan's report opens, from the scans list and from the downloads -------------
        for n, link in enumerate((f"#scans li[data-scan='{scan_id}'] a[data-report]",
                                  f"#downloads li[data-scan='{scan_id}'] a[data-report]")):
            await page.eval("document.body.dataset.report = 'waiting'")
            await page.click(link)
            url = await page.wait("!['', 'waiting'].includes(document.body.dataset.report || 'waiting') && "
                                  "document.body.dataset.report", 60, what="the report")
            assert url.startswith("blob:"), url
            report = await page.eval(f"fetch('{url}').then(r => r.text())")
            assert "Block 7 2026" in report and "no scan" not in report, report[:500]
            # its quicklooks were fetched with the token too: images of this page's origin that load
            sizes = await page.eval(f"fetch('{url}').then(r => r.text()).then(t => Promise.all([...new DOMParser()"
                                    ".parseFromString(t, 'text/html').querySelectorAll('img.quicklook')].map(i => "
                                    "new Promise(ok => { const im = new Image(); im.onload = () => ok(im.naturalWidth);"
                                    " im.onerror = () => ok(0); im.src = i.src; }))))")
            assert sizes and all(w > 0 for w in sizes), sizes
            targets = (await page.send("Target.getTargets"))["targetInfos"]
            assert sum(t["type"] == "page" and t["url"].startswith("blob:") for t in targets) == n + 1, targets
        for t in targets:                      # the report tabs closed: the map's tab draws again in front
            if t["url"].startswith("blob:"):
                await page.send("Target.closeTarget", targetId=t["targetId"])
        await page.send("Page.bringToFront")
        anonymous = requests.get(f"{stack}/scans/{scan_id}/report", timeout=10)
        assert anonymous.status_code == 404                               # a bare link could not open it

        # -- the jobs and layers name their scan and run ------------------------------------------------
        assert f"scan #{scan_id} “Block 7 2026”" in await page.eval(f"document.querySelector(\"{job_li}\").textContent")
        chm_title = await page.eval(f"document.querySelector('#layers li[data-layer=\"raster-{chm_id}\"]').textContent")
        assert f"CHM — scan #{scan_id} “Block 7 2026” — run {job_id[:8]}" in chm_title, chm_title

        # -- a second inventory, then compare the two runs picked by name from a list ------------------
        await page.click(f"{scan_li} .scan-run")
        await page.wait(f"document.getElementById('proc-target').dataset.scan === '{scan_id}'", 20)
        await page.fill("#proc-fields [name=metrics_resolution]", "10")
        second = await _run_form(page, "forest-inventory", "the second run in the list")
        await page.wait(f"(document.body.dataset.layersFor || '').includes('{second}')", 600, every=0.5,
                        what="the second run's layers")
        with psycopg.connect(db_url) as conn:
            chm2 = conn.execute("SELECT id FROM rasters WHERE run_id = %s AND kind = 'chm'", (second,)).fetchone()[0]
        await page.wait(f"!document.querySelector('#legend .legend-block[data-raster=\"{chm_id}\"]')", 20,
                        what="the first run's CHM, no longer listed by the API, to leave the map")
        shown = sorted(await page.eval("[...canopy.rasters.keys()]"))
        listed_rasters = requests.get(f"{stack}/collections/rasters/items?limit=200&f=json", timeout=10,
                                      headers={"Authorization": f"Bearer {_token(stack, people['username'])['access_token']}"})
        assert shown == sorted(str(f["id"]) for f in listed_rasters.json()["features"]) and str(chm2) in shown

        await page.fill("#proc-select", "compare")
        await page.wait("document.body.dataset.formReady === 'compare' && "
                        "document.querySelectorAll('#proc-fields select[data-run=after] option').length >= 2", 30,
                        what="the runs to compare")
        options = await page.eval("[...document.querySelector('#proc-fields select[data-run=after]').options]"
                                  ".map(o => [o.value, o.textContent])")
        labels = dict(options)
        assert job_id in labels and second in labels, options
        assert labels[second].startswith(f"scan #{scan_id} Block 7 2026 — forest-inventory 20") and \
            labels[second].endswith(second[:8]), labels
        assert await page.eval("document.querySelector('#proc-fields select[data-run=before]').value") == job_id
        assert await page.eval("document.querySelector('#proc-fields select[data-run=after]').value") == second
        assert second[:8] in await page.eval("document.getElementById('proc-target').textContent")
        await page.screenshot(SHOTS / "10b-compare-form.png")
        compare = await _run_form(page, "compare", "the compare job")
        await page.wait(f"(document.body.dataset.layersFor || '').includes('{compare}')", 300, every=0.5,
                        what="the compare job's layers")
        compare_li = f"#jobs li[data-job='{compare}']"
        assert await page.eval(f"document.querySelector(\"{compare_li}\").dataset.status") == "successful"
        text = await page.eval(f"document.querySelector(\"{compare_li}\").textContent")
        assert f"runs {job_id[:8]} → {second[:8]}" in text and "stable canopy" in text and " ha" in text, text
        with psycopg.connect(db_url) as conn:
            change_id = conn.execute("SELECT id FROM rasters WHERE run_id = %s AND kind = 'change'", (compare,)).fetchone()[0]
        block = f"#legend .legend-block[data-raster=\"{change_id}\"]"
        legend = await page.wait(f"document.querySelector('{block}')?.textContent", 30, what="the change legend")
        assert f"Change — scan #{scan_id}" in legend and "canopy lost" in legend and "stable canopy" in legend, legend
        await page.eval(f"(() => {{ const b = canopy.rasters.get('{change_id}').bounds; canopy.map.fitBounds("
                        "[[b[0], b[1]], [b[2], b[3]]], {animate: false, padding: 20}); })()")
        await page.wait("canopy.map.loaded() && canopy.map.areTilesLoaded()", 60, what="the change tiles")
        await asyncio.sleep(1.0)
        img = _pixels(await page.screenshot(SHOTS / "10c-change-layer.png"))
        stable = (np.abs(img - np.array([45, 106, 79])).sum(-1) < 12).sum()
        assert stable > 5000, f"only {stable} stable-canopy pixels"
        assert not [line for line in page.console if "HTTP 500" in line], page.console[-10:]

        # -- a job dismissed from the list while it runs: it really stops -----------------------------
        await page.eval("document.getElementById('sec-run').open = true")
        await page.fill("#proc-select", "echo")
        await page.wait("document.body.dataset.formReady === 'echo'", 20)
        await page.fill("#proc-fields [name=message]", "hello")
        await page.fill("#proc-fields [name=delay]", "60")
        await page.click("#proc-run")
        echo = await page.wait("[...document.querySelectorAll('#jobs li[data-job]')].find(li => "
                               "li.textContent.includes('echo') && li.dataset.status === 'running')?.dataset.job", 60,
                               what="the echo job to run")
        await page.click(f"#jobs li[data-job='{echo}'] .job-dismiss")
        await page.wait(f"!document.querySelector(\"#jobs li[data-job='{echo}']\")", 20, what="the job to leave the list")
        token = _token(stack, people["username"])["access_token"]
        gone = requests.get(f"{stack}/jobs/{echo}", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert gone["status"] == "dismissed", gone

        # -- tokens: renewed silently all along, no reload -------------------------------------------------
        assert time.time() * 1000 > first_exp + 1000                     # the first token has expired...
        renewals = int(await page.eval("document.body.dataset.renewals || '0'"))
        assert renewals >= 2, renewals                                   # ...and was renewed, more than once
        assert await page.eval("window.__sameDocument") == "yes"         # without a reload
        assert await page.eval("document.body.dataset.signedIn") == "1"
        exp = int(await page.eval("document.body.dataset.tokenExp"))
        await page.wait(f"Number(document.body.dataset.tokenExp) > {exp}", TOKEN_SECONDS + 5,
                        what="one more silent renewal")
        await page.eval("canopy.refreshAll()")                            # private data, with the new token
        await page.wait(f"!!document.querySelector('#projects li[data-project=\"{people['private']}\"]')", 20)
        with open(stack.log) as fh:
            fh.seek(log_start)
            log = fh.read()
        tiles = [json.loads(line) for line in log.splitlines() if "/tiles/" in line and '"path"' in line]
        refused = [t for t in tiles if t["status"] == 401]
        # a tile takes a token renewed ahead of its expiry; one that waited too long in the browser's
        # queue for a connection and was refused is asked again with a renewed token, and served
        assert len(tiles) > 50 and len(refused) <= 0.02 * len(tiles), (len(refused), len(tiles))
        for t in refused:
            assert any(u["path"] == t["path"] and u["status"] == 200 and u["time"] >= t["time"] for u in tiles), t

        # -- the session revoked elsewhere: "signed out", public layers still shown --------------------
        access = json.loads(await page.eval("sessionStorage.getItem('canopy.session')"))["access"]
        assert requests.post(f"{stack}/auth/logout", headers={"Authorization": f"Bearer {access}"},
                             timeout=10).status_code == 204
        await page.wait("document.body.dataset.signedIn === '0'", TOKEN_SECONDS + 10, what="the signed-out state")
        note = await page.eval("document.getElementById('signedout').textContent")
        assert "session ended" in note, note
        await page.wait(f"!document.querySelector('#legend .legend-block[data-raster=\"{chm_id}\"]')", 20,
                        what="the private CHM to go")
        await page.wait("canopy.map.loaded() && canopy.map.areTilesLoaded()", 60)
        await asyncio.sleep(1.0)
        img = _pixels(await page.screenshot(SHOTS / "11-signed-out-public-layers.png"))
        red = (img[..., 0] > 170) & (img[..., 1] < 70) & (img[..., 2] < 70)
        assert red.sum() > 300, "the public plot's outline is gone"
        assert _viridis_mask(img).sum() < 2000                           # the private CHM is not shown
        assert await page.eval("window.__sameDocument") == "yes"


def test_webapp_journey(stack, people, forest_files, db_url, tmp_path):
    _ensure_viewer_built()
    asyncio.run(_journey(stack, people, forest_files, db_url, tmp_path))


def _axe_script() -> Path | None:
    """axe-core's browser script, when installed (web/node_modules, or CANOPY_AXE_JS)."""
    import os
    for candidate in (os.environ.get("CANOPY_AXE_JS"),
                      Path(__file__).parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


async def _sign_in(page, username: str) -> None:
    await page.fill("#signin input[name=username]", username)
    await page.fill("#signin input[name=password]", PASSWORD)
    await page.eval("document.querySelector('#signin').requestSubmit()")
    await page.wait("document.body.dataset.signedIn === '1'", 30, what="sign-in")


def test_run_goes_to_the_clicked_scan_and_projects_are_made_in_the_page(stack, people, db_url, tmp_path):
    """"Run…" pressed on each of two scans right after sign-in (while the scans list and the
    process form are drawn again) runs each scan once, and the form says which scan it runs;
    then a project is made in the page and its members are managed there."""
    _ensure_viewer_built()
    from argon2 import PasswordHasher
    with psycopg.connect(db_url, autocommit=True) as conn:
        scans = [conn.execute("INSERT INTO scans (project_id, name, status) VALUES (%s, %s, 'ready') RETURNING id",
                              (people["private"], name)).fetchone()[0] for name in ("North stand", "South stand")]
        colleague = f"colleague{int(time.time() * 1000) % 10**8}"
        colleague_id = conn.execute("INSERT INTO users (username, password_hash, role) VALUES (%s, %s, 'viewer') "
                                    "RETURNING id", (colleague, PasswordHasher().hash(PASSWORD))).fetchone()[0]
        since = conn.execute("SELECT now()").fetchone()[0]

    async def run() -> None:
        async with Browser(tmp_path / "profile", WIDTH, HEIGHT) as page:
            await page.goto(f"{stack}/viewer")
            await page.wait("document.body.dataset.ready === '1'", 90, what="the map to load")
            await _sign_in(page, people["username"])
            started = []
            for scan in scans:
                button = f"#scans li[data-scan='{scan}'] .scan-run"
                await page.wait(f"!!document.querySelector(\"{button}\")", 20, every=0.02, what="the scan listed")
                await page.click(button)                   # at once: the form may still be drawn again
                await page.wait(f"document.body.dataset.formReady === 'forest-inventory' && "
                                f"document.getElementById('proc-target').dataset.scan === '{scan}'", 30,
                                what=f"the form to show scan {scan}")
                target = await page.eval("document.getElementById('proc-target').textContent")
                name = "North stand" if scan == scans[0] else "South stand"
                assert f"scan #{scan} “{name}”" in target, target
                assert await page.eval("document.getElementById('proc-run').textContent") == f"Run on scan #{scan}"
                job = await _run_form(page, "", "the job")
                await page.wait(f"document.querySelector(\"#jobs li[data-job='{job}']\").textContent"
                                f".includes('scan #{scan} “{name}”')", 20, what="the job naming its scan")
                started.append(job)
            await page.screenshot(SHOTS / "20-run-on-clicked-scan.png")
            with psycopg.connect(db_url) as conn:
                ran = conn.execute("SELECT (inputs->'inputs'->>'scan')::int, count(*) FROM jobs WHERE created >= %s "
                                   "AND process_id = 'forest-inventory' GROUP BY 1", (since,)).fetchall()
            assert dict(ran) == {scans[0]: 1, scans[1]: 1}, ran

            # -- a project made in the page; its members managed there ----------------------------------
            await page.fill("#pn-name", "Block 9 (made in the page)")
            await page.click("#project-new button[type=submit]")
            project = int(await page.wait("document.getElementById('pn-status').dataset.project", 20,
                                          what="the new project"))
            li = f"#projects li[data-project='{project}']"
            text = await page.wait(f"document.querySelector(\"{li}\")?.textContent", 20, what="the project listed")
            assert "Block 9 (made in the page)" in text and "owner" in text and "private" in text, text
            assert await page.eval(f"[...document.getElementById('up-project').options].some(o => o.value === '{project}')")
            await page.click(f"{li} button[data-members]")
            await page.wait(f"!!document.querySelector(\"{li} .member-add\")", 20, what="the members")
            assert people["username"] in await page.eval(f"document.querySelector(\"{li} .members\").textContent")
            await page.fill(f"{li} .member-add input[name=user]", str(colleague_id))
            await page.eval(f"document.querySelector(\"{li} .member-add\").requestSubmit()")
            member = f"{li} .members li[data-user='{colleague_id}']"
            await page.wait(f"!!document.querySelector(\"{member}\")", 20, what="the member added")
            await page.fill(f"{member} select", "editor")
            await page.wait(f"document.querySelector(\"{li} .member-status\").textContent.includes('editor')", 20)
            with psycopg.connect(db_url) as conn:
                assert conn.execute("SELECT role FROM project_members WHERE project_id = %s AND user_id = %s",
                                    (project, colleague_id)).fetchone() == ("editor",)
            await page.screenshot(SHOTS / "21-project-members.png")
            await page.click(f"{member} .member-remove")
            await page.wait(f"!document.querySelector(\"{member}\")", 20, what="the member removed")
            with psycopg.connect(db_url) as conn:
                assert conn.execute("SELECT count(*) FROM project_members WHERE project_id = %s AND user_id = %s",
                                    (project, colleague_id)).fetchone() == (0,)

    asyncio.run(run())


def test_phone_layout_panel_toggle_and_tap(stack, people, tmp_path):
    """At 390 x 844 the map is full-width and most of the screen, the panel hides behind a
    button (the map then takes the whole screen), and a tap on the map opens a pop-up."""
    _ensure_viewer_built()
    w, h = 390, 844

    async def run() -> None:
        async with Browser(tmp_path / "profile", w, h) as page:
            await page.goto(f"{stack}/viewer")
            await page.wait("document.body.dataset.ready === '1'", 90, what="the map to load")
            box = await page.eval("(() => { const r = document.getElementById('map').getBoundingClientRect();"
                                  " return [r.width, r.height]; })()")
            assert box[0] == w and box[1] >= 0.6 * h, box
            await page.screenshot(SHOTS / "30-phone.png")
            await page.click("#panel-toggle")
            box = await page.eval("(() => { const r = document.getElementById('map').getBoundingClientRect();"
                                  " return [r.width, r.height, canopy.map.getCanvas().clientHeight]; })()")
            assert box[0] == w and box[1] == h and box[2] == h, box
            assert await page.eval("document.getElementById('panel').offsetParent") is None
            assert await page.eval("document.getElementById('panel-toggle').getAttribute('aria-expanded')") == "false"
            lon, lat = people["center"]
            await page.eval(f"canopy.map.jumpTo({{center: [{lon}, {lat}], zoom: 17}}) && true")
            await page.wait("canopy.map.loaded() && canopy.map.areTilesLoaded()", 60)
            await asyncio.sleep(0.5)
            x, y = await page.eval(f"(() => {{ const p = canopy.map.project([{lon}, {lat}]); return [p.x, p.y]; }})()")
            await page.tap(x, y)
            popup = await page.wait("document.querySelector('.maplibregl-popup')?.textContent", 20,
                                    what="a pop-up after a tap")
            assert "public plot" in popup, popup
            await page.screenshot(SHOTS / "31-phone-map-tap.png")
            await page.click("#panel-toggle")
            assert await page.eval("document.getElementById('panel').offsetParent") is not None

    asyncio.run(run())


def test_viewer_has_no_critical_or_serious_axe_violations(stack, people, tmp_path):
    """axe-core on /viewer, signed out and signed in with every panel open: 0 critical, 0 serious."""
    script = _axe_script()
    if script is None:
        pytest.skip("axe-core is not installed (npm install in web/, or CANOPY_AXE_JS)")
    _ensure_viewer_built()

    async def run() -> None:
        async with Browser(tmp_path / "profile", WIDTH, HEIGHT) as page:
            await page.goto(f"{stack}/viewer")
            await page.wait("document.body.dataset.ready === '1'", 90, what="the map to load")
            found = {}
            for state in ("signed out", "signed in"):
                if state == "signed in":
                    await _sign_in(page, people["username"])
                    await page.wait("document.body.dataset.formReady === 'forest-inventory'", 30)
                    await page.wait(f"!!document.querySelector('#projects li[data-project=\"{people['private']}\"] "
                                    "button[data-members]')", 20)
                    await page.click(f"#projects li[data-project='{people['private']}'] button[data-members]")
                    await page.wait(f"!!document.querySelector('#projects li[data-project=\"{people['private']}\"] "
                                    ".members ul')", 20)
                await page.eval("document.querySelectorAll('details').forEach(d => d.open = true)")
                await asyncio.sleep(0.5)
                violations = await page.axe(script)
                print(f"\naxe on /viewer {state}: " + (", ".join(f"{v['id']} ({v['impact']}, {len(v['nodes'])})"
                                                               for v in violations) or "no violation"))
                found[state] = [v for v in violations if v["impact"] in ("critical", "serious")]
            assert found == {"signed out": [], "signed in": []}, json.dumps(found, indent=1)

    asyncio.run(run())
