"""pygeoapi's HTML templates, made to work offline.

pygeoapi 0.21's templates load Bootstrap, Leaflet, its marker clusters and Swagger UI
from CDNs, which a machine without internet (or a careful network) cannot reach.
At every start `write_templates` copies each template that names a CDN into the run
directory with those addresses replaced by the copies the server serves itself at
`/static/vendor/` (bundled from npm by web/pygeoapi-assets.mjs), and adds Canopy's
own templates (the web app's link on the landing page, an items JSON-LD template
that is JSON when the page is empty). pygeoapi is pointed at that
directory with `server.templates.path`; a template it does not find there it takes
from its own package, so only what had to change is copied.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pygeoapi

PYGEOAPI_TEMPLATES = Path(pygeoapi.__file__).parent / "templates"
OWN_TEMPLATES = Path(__file__).parent / "templates"
VENDOR = "{{ config['server']['url'] }}/static/vendor"
# CDN address (a regular expression) -> the local copy
REPLACEMENTS = [
    (r"https://unpkg\.com/bootstrap@[\d.]+/dist/css/bootstrap\.min\.css", f"{VENDOR}/bootstrap/bootstrap.min.css"),
    (r"https://unpkg\.com/leaflet@[\d.]+/dist/leaflet\.css", f"{VENDOR}/leaflet/leaflet.css"),
    (r"https://unpkg\.com/leaflet@[\d.]+/dist/leaflet\.js", f"{VENDOR}/leaflet/leaflet.js"),
    (r"https://cdnjs\.cloudflare\.com/ajax/libs/leaflet/[\d.]+/leaflet\.js", f"{VENDOR}/leaflet/leaflet.js"),
    (r"https://unpkg\.com/leaflet\.markercluster/dist/(MarkerCluster(?:\.Default)?\.css)",
     rf"{VENDOR}/leaflet.markercluster/\1"),
    (r"https://unpkg\.com/leaflet\.markercluster/dist/leaflet\.markercluster-src\.js",
     f"{VENDOR}/leaflet.markercluster/leaflet.markercluster.js"),
    (r"https://unpkg\.com/swagger-ui-dist/([\w.-]+\.(?:css|js|png))", rf"{VENDOR}/swagger-ui/\1"),
    # only ever loaded by Internet Explorer 8 and older
    (r"\s*<!--\[if lt IE 9\]>\s*<script src=\"https://cdnjs[^\"]+\"></script>\s*<!\[endif\]-->", ""),
]
# Canopy's additions to pygeoapi's own templates: (template, anchor, text put after the anchor)
INSERTIONS = [("landing_page.html", "{% block body %}", '\n{% include "canopy_links.html" %}')]
CDN = re.compile(r"""(?:src|href)=["'](https?://(?:unpkg\.com|cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com|"""
                 r"""fonts\.googleapis\.com)[^"']*)""")


def rewrite(text: str) -> str:
    """A template's text with the CDN addresses replaced by the local copies."""
    for pattern, local in REPLACEMENTS:
        text = re.sub(pattern, local, text)
    return text


def cdn_addresses(text: str) -> list[str]:
    """The CDN addresses a template still loads something from."""
    return CDN.findall(text)


def _write(path: Path, text: str) -> None:
    """Atomically: every web worker writes the same files at its start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_templates(run_dir: Path) -> Path:
    """Write the rewritten and Canopy's own templates under `run_dir/templates`; returns it."""
    out = run_dir / "templates"
    insertions = {name: (anchor, added) for name, anchor, added in INSERTIONS}
    for source in PYGEOAPI_TEMPLATES.rglob("*.html"):
        name = source.relative_to(PYGEOAPI_TEMPLATES).as_posix()
        text = source.read_text()
        new = rewrite(text)
        if name in insertions:
            anchor, added = insertions[name]
            new = new.replace(anchor, anchor + added, 1)
        if new != text:
            _write(out / name, new)
    for source in (*OWN_TEMPLATES.rglob("*.html"), *OWN_TEMPLATES.rglob("*.jsonld")):
        _write(out / source.relative_to(OWN_TEMPLATES), source.read_text())
    return out
