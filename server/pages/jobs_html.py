"""/jobs?f=html: the job list as pygeoapi's own HTML page (its `jobs/index.html`, made
offline by server/pages/templates.py), filled from Canopy's job table — the same jobs,
in the same order and with the same paging, as /jobs serves as JSON."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import Response, current_app, request


def wants_html() -> bool:
    """`f=html`, or a browser's request (text/html preferred) without `f`."""
    f = request.args.get("f")
    if f is not None:
        return f == "html"
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]


def _seconds(value: str | None) -> str | None:
    """ISO times to the second (pygeoapi prints durations with every digit it is given)."""
    return value.split(".")[0] + "Z" if value else value


def render(jobs: list[dict], links: list[dict]) -> Response:
    from pygeoapi.util import render_j2_template

    config = current_app.config["PYGEOAPI_CONFIG"]
    shown = [{**job, "started": _seconds(job["started"]), "finished": _seconds(job["finished"])} for job in jobs]
    html_links = [{**link, "type": "text/html", "href": link["href"] if "f=html" in link["href"] else
                   link["href"].replace("/jobs?", "/jobs?f=html&") if "?" in link["href"] else link["href"] + "?f=html"}
                  for link in links]
    data = {"jobs": {"jobs": shown, "links": html_links}, "offset": 0,
            "now": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    html = render_j2_template(config, config["server"].get("templates"), "jobs/index.html", data, "en-US")
    return Response(html, mimetype="text/html")
