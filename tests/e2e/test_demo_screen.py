"""The first screen of `make run`, on a fresh stack: the demo forest is simulated, ingested
and inventoried through the real job system (`python -m server demo --wait`, as `make run`
does in the background, with a real Huey worker), and a visitor who has not signed in
sees it processed at once: CHM pixels and tree symbols on the map, the demo's successful
`forest-inventory` in the jobs list, and the scan's report page. Screenshots go to
/tmp/webapp-shots/ beside the journey's (tests/e2e/test_webapp.py)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time

import numpy as np
import psycopg
import pytest
import requests

from server import demo
from tests.conftest import ROOT, Workers, _service_env, private_services, running_server
from tests.e2e.browser import Browser
from tests.e2e.test_viewer import _ensure_viewer_built
from tests.e2e.test_webapp import HEIGHT, SHOTS, WIDTH, _pixels, _viridis_mask


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory):
    """(base URL, database URL, seconds the demo took, its log) of a fresh stack of its own
    whose demo has been completed through the job system."""
    run_dir = tmp_path_factory.mktemp("demo-stack")
    with private_services("demo", "admin", "admin") as (_, _, db, redis_url, _):
        services = (db, redis_url)
        with running_server(services, run_dir) as base:
            workers = Workers(services, run_dir)
            workers.start(1)
            try:
                started = time.monotonic()
                proc = subprocess.run([sys.executable, "-m", "server", "demo", "--wait"], cwd=ROOT,
                                      env=_service_env(services, run_dir), capture_output=True, text=True,
                                      timeout=900)
                assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
                yield base, db, time.monotonic() - started, proc.stdout
            finally:
                workers.stop_all()


def test_the_first_screen_shows_the_processed_demo_before_sign_in(demo_stack, tmp_path):
    _ensure_viewer_built()
    base, db, seconds, log = demo_stack
    assert "demo: inventory done" in log, log
    with psycopg.connect(db) as conn:
        scan_id, status = conn.execute("SELECT id, status FROM scans WHERE name = %s", (demo.SCAN,)).fetchone()
        kinds = {k for (k,) in conn.execute("SELECT kind FROM rasters WHERE scan_id = %s", (scan_id,))}
        n_trees = conn.execute("SELECT count(*) FROM trees WHERE scan_id = %s", (scan_id,)).fetchone()[0]
        job_id = conn.execute("SELECT identifier FROM jobs WHERE process_id = 'forest-inventory' AND "
                              "status = 'successful' AND parent_id IS NULL").fetchone()[0]
        plots_with_metrics = conn.execute("SELECT count(*) FROM plots WHERE metrics <> '{}'::jsonb").fetchone()[0]
    assert status == "ready" and {"chm", "dtm"} <= kinds and n_trees > 100, (status, kinds, n_trees)
    assert plots_with_metrics == 6
    print(f"demo completed through the job system in {seconds:.0f} s: {n_trees} trees, rasters {sorted(kinds)}")
    asyncio.run(_first_screen(base, scan_id, job_id, tmp_path))


async def _first_screen(base: str, scan_id: int, job_id: str, tmp_path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with Browser(tmp_path / "profile", WIDTH, HEIGHT) as page:
        await page.goto(f"{base}/viewer")
        await page.wait("document.body.dataset.ready === '1'", 90, what="the map to load")
        assert await page.eval("document.getElementById('signedout').hidden") is False     # nobody signed in
        # the demo's inventory, finished, in the jobs list
        job_li = f"#jobs li[data-job='{job_id}']"
        await page.wait(f"document.querySelector(\"{job_li}\")?.dataset.status === 'successful'", 30,
                        what="the demo's forest-inventory in the jobs list")
        assert "forest-inventory" in await page.eval(f"document.querySelector(\"{job_li}\").textContent")
        await page.wait("canopy.map.loaded() && canopy.map.areTilesLoaded()", 60, what="the tiles")
        await asyncio.sleep(1.0)
        img = _pixels(await page.screenshot(SHOTS / "00-first-screen-demo.png"))
        chm = _viridis_mask(img)
        assert chm.sum() > 20000, f"only {chm.sum()} CHM pixels"
        ys, xs = np.nonzero(chm)
        white = (img[ys.min() * 2: ys.max() * 2, xs.min() * 2: xs.max() * 2].min(-1) > 245).sum()
        assert white > 500, f"only {white} tree-symbol pixels"
    report = requests.get(f"{base}/scans/{scan_id}/report", timeout=60)
    assert report.status_code == 200 and report.headers["Content-Type"].startswith("text/html")
    stems = re.search(r'id="stems-per-ha">(\d+)<', report.text)
    assert stems and int(stems.group(1)) > 10 and "<svg" in report.text, report.text[-3000:]


def test_field_plots_imported_from_the_page(demo_stack, tmp_path):
    """A forester signs in and imports a CSV of plot centres with measured attributes; a
    CSV without a CRS is refused with the server's reason."""
    base, db, _, _ = demo_stack
    ox, oy = demo.origin()
    good = tmp_path / "field_plots.csv"
    good.write_text("plot,x,y,stems_ha,volume_m3ha\n" + "\n".join(
        f"F{i},{ox + 60 + 40 * i},{oy + 150},{400 + 10 * i},{300.5 + i}" for i in range(3)))
    asyncio.run(_import(base, good, tmp_path))
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT name, attributes, ST_Area(geom::geography) FROM plots WHERE name LIKE 'F%%' "
                            "ORDER BY name").fetchall()
    assert [r[0] for r in rows] == ["F0", "F1", "F2"]
    assert rows[1][1] == {"stems_ha": 410, "volume_m3ha": 301.5}
    assert all(abs(r[2] - 400) < 4 for r in rows), [r[2] for r in rows]


async def _sign_in(page, base: str) -> None:
    """The viewer loaded and signed in as the demo's admin."""
    from tests.conftest import PASSWORD
    await page.goto(f"{base}/viewer")
    await page.wait("document.body.dataset.ready === '1'", 90, what="the map to load")
    await page.fill("#signin input[name=username]", "admin")
    await page.fill("#signin input[name=password]", PASSWORD)
    await page.eval("document.querySelector('#signin').requestSubmit()")
    await page.wait("document.body.dataset.signedIn === '1'", 30, what="sign-in")


async def _import(base: str, good, tmp_path) -> None:
    async with Browser(tmp_path / "profile", WIDTH, HEIGHT) as page:
        await _sign_in(page, base)
        await page.wait("document.getElementById('fp-project').options.length > 0", 20, what="a project to import into")
        await page.eval("document.getElementById('sec-fieldplots').open = true")
        status = "document.getElementById('fp-status')"
        # no CRS: refused, with the server's reason
        await page.set_files("#fp-file", [good])
        await page.fill("#fp-radius", "11.28")
        await page.fill("#fp-name", "plot")
        await page.click("#fp-start")
        await page.wait(f"{status}.dataset.state === 'refused'", 30, what="the refusal")
        assert "names no CRS" in await page.eval(f"{status}.textContent")
        await page.fill("#fp-crs", f"EPSG:{demo.EPSG}")
        await page.click("#fp-start")
        await page.wait(f"{status}.dataset.state === 'done'", 30, what="the import")
        assert await page.eval(f"{status}.dataset.imported") == "3"
        await page.screenshot(SHOTS / "12-field-plots-imported.png")


def test_area_based_inventory_fitted_and_mapped_from_the_page(demo_stack, tmp_path):
    """The area-based loop in the browser (issue 18): 40 field plots over the demo scan carry
    attributes derived from its detected trees (stems per ha and their mean height, as a crew
    would measure them); the forester picks the scan and the attributes, fits (plot metrics,
    then the models), reads each model's cross-validation with its two charts, and maps one:
    grid metrics at the model's resolution, the prediction as a layer with its legend."""
    from tests.conftest import token_of
    _ensure_viewer_built()
    base, db, _, _ = demo_stack
    ox, oy = demo.origin()
    with psycopg.connect(db) as conn:
        project = conn.execute("SELECT id FROM projects WHERE name = %s", (demo.PROJECT,)).fetchone()[0]
        trees = np.array(conn.execute("SELECT t.x, t.y, t.height_m FROM trees t JOIN scans s ON s.id = t.scan_id "
                                      "WHERE s.name = %s", (demo.SCAN,)).fetchall(), float)
    radius = 11.28
    rows = []
    for i in range(40):                          # an 8 x 5 lattice, clear of the scan's edges and the demo plots
        x, y = ox + 25 + 250 / 7 * (i % 8), oy + 30 + 240 / 4 * (i // 8)
        inside = (trees[:, 0] - x) ** 2 + (trees[:, 1] - y) ** 2 <= radius ** 2
        stems = inside.sum() * 1e4 / (np.pi * radius ** 2)
        rows.append(f"A{i},{x:.2f},{y:.2f},{stems:.1f},{trees[inside, 2].mean() if inside.any() else 0:.2f}")
    csv = "plot,x,y,stems_per_ha,mean_height\n" + "\n".join(rows)
    token = token_of(base, "admin")
    r = requests.post(f"{base}/projects/{project}/plots", params={"radius": radius, "crs": f"EPSG:{demo.EPSG}",
                                                                 "name": "plot"},
                      data=csv, headers={"Content-Type": "text/csv", "Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 201 and r.json()["imported"] == 40, r.text
    cards = asyncio.run(_fit_and_map(base, tmp_path))
    assert [c["attribute"] for c in cards] == ["mean_height", "stems_per_ha"], cards
    for c in cards:
        print(f"\n  page fit {c['attribute']}: {c['text']}")
        assert c["points"] == 40 and c["residuals"] == 40 and c["one_to_one"] == 1
    height = cards[0]
    with psycopg.connect(db) as conn:
        (rmse_pct, baseline), = conn.execute("SELECT (validation->>'rmse_pct')::float, "
                                             "(validation->>'baseline_rmse_pct')::float FROM area_models "
                                             "WHERE attribute = 'mean_height'").fetchall()
        kind, bands = conn.execute("SELECT kind, bands FROM rasters WHERE id = %s", (height["raster"],)).fetchone()
    assert f"{rmse_pct:.1f}" == height["rmse_pct"] and rmse_pct < 0.75 * baseline, (rmse_pct, baseline)
    assert kind == "aba" and bands[0] == "mean_height"
    assert height["legend"].startswith("Area-based prediction") and "mean_height" in height["legend"], height
    assert height["viridis_share"] > 0.05, height
    assert "mean_height total" in height["joint_note"] and "stems_per_ha total" in height["joint_note"], height
    assert [b.split(" ")[0] for b in height["joint_bands"]] == [
        "mean_height", "stems_per_ha", "mean_height_extrapolated", "stems_per_ha_extrapolated"], height


async def _fit_and_map(base: str, tmp_path) -> list[dict]:
    async with Browser(tmp_path / "profile-aba", WIDTH, HEIGHT) as page:
        await _sign_in(page, base)
        await page.eval("document.getElementById('sec-aba').open = true")
        await page.wait("document.querySelectorAll('input[name=aba-attr]').length >= 2", 30, what="the plots' attributes")
        await page.eval("for (const i of document.querySelectorAll('input[name=aba-attr]')) "
                        "i.checked = ['stems_per_ha', 'mean_height'].includes(i.value)")
        await page.eval("document.getElementById('aba-validation').value = 'loo'")
        await page.click("#aba-fit")
        status = "document.getElementById('aba-status')"
        await page.wait(f"['done', 'refused'].includes({status}.dataset.state)", 300, what="the fit")
        assert await page.eval(f"{status}.dataset.state") == "done", await page.eval(f"{status}.textContent")
        cards = await page.eval("""[...document.querySelectorAll('.aba-model')].map((c) => ({
            attribute: c.querySelector('b').textContent, text: c.querySelector('.muted').textContent,
            rmse_pct: c.querySelector('.rmse-pct').textContent, points: c.querySelectorAll('.point').length,
            residuals: c.querySelectorAll('.residual').length, one_to_one: c.querySelectorAll('.one-to-one').length,
            id: c.dataset.id}))""")
        cards.sort(key=lambda c: c["attribute"])
        await page.eval(f"document.querySelector('.aba-model[data-id=\"{cards[0]['id']}\"] button').click()")
        note = f"document.querySelector('.aba-model[data-id=\"{cards[0]['id']}\"] .aba-map-status')"
        await page.wait(f"['done', 'refused'].includes({note}.dataset.state)", 300, what="the prediction")
        assert await page.eval(f"{note}.dataset.state") == "done", await page.eval(f"{note}.textContent")
        cards[0]["raster"] = int(await page.eval(f"{note}.dataset.raster"))
        cards[0]["note"] = await page.eval(f"{note}.textContent")
        rid = cards[0]["raster"]
        await page.wait(f"window.canopy.rasters.has('{rid}')", 60, what="the prediction's layer")
        cards[0]["legend"] = await page.eval(f"document.querySelector('#legend .legend-block[data-raster=\"{rid}\"] "
                                            ".legend-title').textContent")
        await page.eval("for (const [id, r] of window.canopy.rasters) if (r.kind !== 'aba') "
                        "window.canopy.map.setLayoutProperty(r.layer, 'visibility', 'none'); 0")
        await page.eval(f"window.canopy.map.fitBounds(window.canopy.rasters.get('{rid}').bounds, {{animate: false}}); 0")
        await page.wait("window.canopy.map.areTilesLoaded()", 60, what="the prediction's tiles")
        await asyncio.sleep(1.0)
        png = await page.screenshot(SHOTS / "13-area-based-prediction.png")
        cards[0]["viridis_share"] = float(_viridis_mask(_pixels(png)).mean())
        # both models in one job: one COG whose bands the legend's picker offers
        await page.click(".aba-all button")
        every = "document.querySelector('.aba-all .aba-map-status')"
        await page.wait(f"['done', 'refused'].includes({every}.dataset.state)", 300, what="the joint prediction")
        assert await page.eval(f"{every}.dataset.state") == "done", await page.eval(f"{every}.textContent")
        both = await page.eval(f"{every}.dataset.raster")
        await page.wait(f"window.canopy.rasters.has('{both}')", 60, what="the joint prediction's layer")
        cards[0]["joint_note"] = await page.eval(f"{every}.textContent")
        cards[0]["joint_bands"] = await page.eval(f"[...document.querySelectorAll('.band-picker[data-raster=\"{both}\"] "
                                                  "option')].map((o) => o.textContent)")
        return cards
