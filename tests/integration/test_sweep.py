"""Every operation of the OpenAPI document swept with bad input (issue 30): ids that name
nothing, a malformed date and a JSON body holding a lone UTF-16 surrogate are a client's
mistake, so none may answer 5xx — as an administrator or anonymously. All failures are
collected and reported at once."""

from __future__ import annotations

import base64
import re

import pytest
import requests

BAD_IDS = ("x", "0", "-1", "99999999999999999999", "%0A", "%ED%A0%80")   # the last: a surrogate's UTF-8 bytes
BAD_DATE = "2020-13-45"
SURROGATE_BODY = '{"name": "\\ud800", "inputs": {"scan": "\\ud800"}, "properties": {"name": "\\ud800"}}'
METHODS = ("get", "head", "post", "put", "patch", "delete")


def _resolve(doc: dict, node: dict) -> dict:
    """`node`, or what its local `$ref` names."""
    while "$ref" in node:
        target = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _requests(doc: dict):
    """(method, path, query, content type, body) for every operation: its path parameters
    each bad id in turn; then, with ids that may exist, each bad id in its integer query
    parameters, and a bad date in its date parameters (in each format it answers in), the
    body holding a lone surrogate."""
    for template, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            query = [p for p in map(lambda p: _resolve(doc, p), op.get("parameters", []) + item.get("parameters", []))
                     if p.get("in") == "query"]
            dates = {p["name"]: BAD_DATE for p in query
                     if p["name"] in ("datetime", "created_at") or p.get("schema", {}).get("format") == "date-time"}
            ids = [p["name"] for p in query if p.get("schema", {}).get("type") == "integer"]
            formats = next((p["schema"].get("enum", []) for p in query if p["name"] == "f"), [])
            content = op.get("requestBody", {}).get("content", {})
            kind, body = next(iter(content), "application/json"), SURROGATE_BODY if content else None
            for bad in BAD_IDS:
                yield method, re.sub(r"\{[^}]+\}", bad, template), {}, kind, body
            path = re.sub(r"\{[^}]+\}", "1", template)
            for bad in BAD_IDS if ids else ():
                yield method, path, {name: bad for name in ids}, kind, body
            for f in formats if dates else ():
                yield method, path, {**dates, "f": f}, kind, body
            if dates or body:
                yield method, path, dates, kind, body


@pytest.mark.parametrize("who", ["admin", "anonymous"])
def test_no_operation_answers_5xx_to_bad_ids_dates_or_surrogates(server, admin_headers, who):
    doc = requests.get(f"{server}/openapi", params={"f": "json"}, timeout=60).json()
    auth = admin_headers if who == "admin" else {}
    failures, sent = [], 0
    for method, path, query, kind, body in _requests(doc):
        headers = {**auth, "Tus-Resumable": "1.0.0", "If-Match": '"1"', "Content-Type": kind}
        try:
            r = requests.request(method.upper(), f"{server}{path}", params=query, data=body,
                                 headers=headers, timeout=30, stream=True)
            r.close()
        except requests.RequestException as err:
            failures.append(f"{method.upper()} {path} {query}: {type(err).__name__}")
            continue
        sent += 1
        if r.status_code >= 500:
            failures.append(f"{method.upper()} {path} {query}: {r.status_code}")
    assert sent > 100
    assert failures == [], f"{len(failures)} of {sent} requests failed:\n" + "\n".join(failures)



def test_upload_metadata_text_postgresql_cannot_store_is_a_400(server, make_user, project):
    """Found beside the sweep: a NUL in a tus metadata value was a 500 (jsonb refuses it)."""
    headers = {"Authorization": f"Bearer {make_user('analyst', {project: 'editor'}).token}",
               "Tus-Resumable": "1.0.0", "Upload-Length": "100"}
    for name in (b"a\x00b", b"tab\x01"):
        meta = ",".join(f"{k} {base64.b64encode(v).decode()}" for k, v in
                        (("filename", b"x.laz"), ("project", str(project).encode()), ("name", name)))
        r = requests.post(f"{server}/uploads", headers={**headers, "Upload-Metadata": meta})
        assert r.status_code == 400 and "control character" in r.json()["detail"], (name, r.status_code, r.text)
        assert r.headers["Tus-Resumable"] == "1.0.0"

# pygeoapi's generic routes: its document names each collection's and process's path
# instead; and what no client calls by the document (assets, the web app's files)
_GENERIC = re.compile(r"^/(collections/\{\}|processes/\{\}|stac|static|TileMatrixSets|viewer/\{\})")


def test_the_document_names_every_route_the_server_serves(server, services, tmp_path):
    """The sweep covers what the document names: a route missing from it (the tus
    endpoints were) is swept by nothing, and no client learns it from the document."""
    from server.app import create_app
    from server.settings import get_settings
    from tests.conftest import JWT_SECRET

    doc = requests.get(f"{server}/openapi", params={"f": "json"}, timeout=60).json()
    documented = {(re.sub(r"\{[^}]+\}", "{}", path), method.upper())
                  for path, item in doc["paths"].items() for method in item if method in METHODS}
    with pytest.MonkeyPatch.context() as env:
        for name, value in (("DATABASE_URL", services[0]), ("REDIS_URL", services[1]),
                            ("CANOPY_JWT_SECRET", JWT_SECRET), ("CANOPY_DATA_DIR", str(tmp_path)),
                            ("CANOPY_RUN_DIR", str(tmp_path / "run"))):
            env.setenv(name, value)
        get_settings.cache_clear()
        app = create_app(get_settings())
    get_settings.cache_clear()
    served = {(re.sub(r"<[^>]+>", "{}", rule.rule), method) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"OPTIONS", "HEAD"}}
    missing = sorted(f"{method} {path}" for path, method in served - documented if not _GENERIC.match(path))
    assert missing == []
