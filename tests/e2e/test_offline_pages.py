"""pygeoapi's HTML pages work offline: headless Chromium (driven over the DevTools
protocol, tests/e2e/browser.py) loads the landing page, /collections, the plots' items,
Swagger UI and the jobs page with every request to any other host blocked, and each
page must make no such request at all, have no failed request to the server (no 404
for a stylesheet, script or picture), and render: Bootstrap's styles applied, the
landing page's link to the web app, Leaflet's map with the plot, Swagger UI's
operations, the jobs table."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

import psycopg
import pytest
import requests

from tests.e2e.browser import Browser


@pytest.fixture(scope="module")
def plot(db_url) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = conn.execute("INSERT INTO projects (name, visibility) VALUES ('offline pages', 'public') "
                               "RETURNING id").fetchone()[0]
        ring = [[8.55, 47.08], [8.56, 47.08], [8.56, 47.09], [8.55, 47.09], [8.55, 47.08]]
        return conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, 'offline plot', "
                            "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)) RETURNING id",
                            (project, json.dumps({"type": "MultiPolygon", "coordinates": [[ring]]}))).fetchone()[0]


class Offline:
    """Blocks every request to another host (Fetch domain) and records what was asked for."""

    def __init__(self, page: Browser, origin: str):
        self.page, self.origin = page, origin
        self.foreign: list[str] = []
        self.seen = 0

    async def start(self) -> None:
        await self.page.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            events = self.page.events
            while self.seen < len(events):
                event = events[self.seen]
                self.seen += 1
                if event.get("method") != "Fetch.requestPaused":
                    continue
                params = event["params"]
                url = params["request"]["url"]
                if _origin(url) == self.origin:
                    await self.page.send("Fetch.continueRequest", requestId=params["requestId"])
                else:
                    self.foreign.append(url)
                    await self.page.send("Fetch.failRequest", requestId=params["requestId"],
                                         errorReason="BlockedByClient")
            await asyncio.sleep(0.01)


def _origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


def _network(events: list[dict], since: int) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, str]]]:
    """(every URL requested, (URL, status) of every response, (URL, error) of every failed load)."""
    urls, responses, failed, by_id = [], [], [], {}
    for event in events[since:]:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            by_id[params["requestId"]] = params["request"]["url"]
            urls.append(params["request"]["url"])
        elif method == "Network.responseReceived":
            responses.append((params["response"]["url"], params["response"]["status"]))
        elif method == "Network.loadingFailed":
            failed.append((by_id.get(params["requestId"], "?"), params.get("errorText", "")))
    return urls, responses, failed


PAGES = [
    # (path, a JS expression true once the page has rendered what it must)
    ("/?f=html", "document.querySelector('a.btn-success[href$=\"/viewer\"]') && "
                 "getComputedStyle(document.querySelector('a.btn-success')).backgroundColor === 'rgb(25, 135, 84)'"),
    ("/collections?f=html", "[...document.querySelectorAll('a')].some(a => a.href.endsWith('/collections/plots'))"),
    ("/collections/plots/items?f=html&limit=1000",
     "document.querySelector('.leaflet-container') && document.querySelectorAll('path.leaflet-interactive').length > 0"
     " && document.body.innerText.includes('offline plot')"),
    ("/openapi?f=html", "document.querySelectorAll('.opblock').length >= 5 && "
                        "[...document.querySelectorAll('.opblock-summary-path')].some(e => e.innerText === '/processes')"),
    ("/jobs?f=html", "document.querySelector('table.job-list') && "
                     "getComputedStyle(document.querySelector('table.job-list')).borderCollapse === 'collapse'"),
]


async def _visit_all(server: str, profile) -> list[dict]:
    results = []
    async with Browser(profile) as page:
        offline = Offline(page, _origin(server))
        await offline.start()
        for path, ready in PAGES:
            since, blocked = len(page.events), len(offline.foreign)
            await page.goto(server + path)
            try:
                await page.wait(f"document.readyState === 'complete' && ({ready})", timeout=120, what=path)
            except AssertionError as err:
                text = await page.eval("[document.readyState, document.querySelectorAll('.opblock').length, "
                                       "location.href, document.body ? document.body.innerText.slice(0, 200) : '']")
                raise AssertionError(f"{err}\npage text: {text!r}\nresponses: {_network(page.events, since)[1:]}")
            await page.wait("[...document.images].every(i => i.complete)", timeout=30, what=f"{path} images")
            await asyncio.sleep(1.5)              # late requests (the JSON-LD the pages fetch, map tiles)
            images = await page.eval("[...document.images].map(i => [i.src, i.naturalWidth])")
            urls, responses, failed = _network(page.events, since)
            results.append({"path": path, "foreign": offline.foreign[blocked:], "urls": urls,
                            "responses": responses, "failed": failed, "images": images})
        offline.task.cancel()
    return results


def test_pygeoapi_pages_need_no_other_host(server, plot, tmp_path):
    results = asyncio.run(_visit_all(server, tmp_path / "profile"))
    origin = _origin(server)
    for page in results:
        path = page["path"]
        assert page["foreign"] == [], f"{path} asked other hosts for {page['foreign']}"
        others = [u for u in page["urls"] if not u.startswith(("data:", "blob:", "about:")) and _origin(u) != origin]
        assert others == [], f"{path} requested {others}"
        bad = [(u, s) for u, s in page["responses"] if s >= 400]
        assert bad == [], f"{path}: failed requests to the server: {bad}"
        assert page["failed"] == [], f"{path}: requests that did not load: {page['failed']}"
        broken = [src for src, width in page["images"] if not width]
        assert broken == [], f"{path}: pictures that did not load: {broken}"
        # it did load its styles and scripts from the server itself
        assert any(u.startswith(f"{origin}/static/") for u in page["urls"]), path
    loaded = {u for page in results for u, s in page["responses"] if s == 200}
    for asset in ("/static/vendor/bootstrap/bootstrap.min.css", "/static/css/default.css", "/static/img/logo.png",
                  "/static/vendor/leaflet/leaflet.js", "/static/vendor/swagger-ui/swagger-ui-bundle.js"):
        assert f"{origin}{asset}" in loaded, f"{asset} was not loaded"


def test_jobs_page_lists_the_jobs_the_json_lists(server, plot):
    listed = requests.get(f"{server}/jobs", timeout=30).json()["jobs"]
    html = requests.get(f"{server}/jobs", params={"f": "html"}, timeout=30)
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    assert html.text.count("<tr>") - 1 == len(listed)             # a header row, then one row per job
    for job in listed:
        assert f"/jobs/{job['jobID']}" in html.text
    browser = requests.get(f"{server}/jobs", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
                           timeout=30)
    assert browser.headers["Content-Type"].startswith("text/html")
    assert requests.get(f"{server}/jobs", headers={"Accept": "*/*"}, timeout=30).headers[
        "Content-Type"].startswith("application/json")


def test_landing_page_about_link_is_this_servers_api_documentation(server):
    """The landing page's `about` (and the provider's and contact's addresses) name a page
    this server serves, not a repository elsewhere."""
    landing = requests.get(f"{server}/", params={"f": "json"}, timeout=30).json()
    about = [link["href"] for link in landing["links"] if link.get("rel") == "about"]
    assert about == [f"{server}/openapi?f=html"], about
    page = requests.get(about[0], timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "swagger-ui" in page.text


def test_no_template_the_pages_use_loads_from_a_cdn(tmp_path):
    from server.pages.templates import cdn_addresses, write_templates
    out = write_templates(tmp_path)
    used = ["_base.html", "landing_page.html", "collections/index.html", "collections/collection.html",
            "collections/items/index.html", "collections/items/item.html", "openapi/swagger.html",
            "openapi/redoc.html", "jobs/index.html", "jobs/job.html", "processes/index.html",
            "processes/process.html", "conformance.html"]
    from server.pages.templates import PYGEOAPI_TEMPLATES
    for name in used:
        text = (out / name).read_text() if (out / name).exists() else (PYGEOAPI_TEMPLATES / name).read_text()
        assert cdn_addresses(text) == [], name
    assert "canopy_links.html" in (out / "landing_page.html").read_text()
