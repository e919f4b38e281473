"""Input limits: a request body cap (413), JSON nesting depth and NaN/Infinity (400),
on the real server, for every route that takes JSON."""

from __future__ import annotations

import http.client
from urllib.parse import urlparse

import pytest
import requests

pytestmark = pytest.mark.integration
JSON_ROUTES = ["/collections/plots/items", "/processes/echo/execution", "/auth/token"]


def _post(server, path, data: bytes, headers: dict, ctype: str = "application/json") -> requests.Response:
    return requests.post(server + path, data=data, headers={"Content-Type": ctype, **headers}, timeout=60)


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_deeply_nested_json_is_400(server, admin_headers, path):
    for depth in (100_000, 65):
        body = b"[" * depth + b"]" * depth
        ctype = "application/geo+json" if "plots" in path else "application/json"
        r = _post(server, path, body, admin_headers, ctype)
        assert (depth, r.status_code, r.headers["Content-Type"]) == (depth, 400, "application/problem+json")
        assert "nests too deeply" in r.json()["detail"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_400(server, admin_headers, constant):
    r = _post(server, "/processes/echo/execution", b'{"inputs": {"message": "x", "delay": %s}}' % constant.encode(),
              admin_headers)
    assert r.status_code == 400 and constant in r.json()["detail"]
    plot = (b'{"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, '
            b'"properties": {"name": "p", "attributes": {"dbh": %s}}}' % constant.encode())
    r = _post(server, "/collections/plots/items", plot, admin_headers, "application/geo+json")
    assert r.status_code == 400 and constant in r.json()["detail"]


def test_a_body_over_the_cap_is_413_before_it_is_read(server, admin_headers):
    url = urlparse(server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", "/collections/plots/items")
    for key, value in {**admin_headers, "Content-Type": "application/geo+json",
                       "Content-Length": str(200 << 20)}.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(b'{"type": "Feature", "properties": {"name": "' + b"x" * 65536)   # not the 200 MB
    r = conn.getresponse()
    assert (r.status, r.getheader("Content-Type")) == (413, "application/problem+json")
    conn.close()


def test_a_body_under_the_cap_and_a_shallow_document_still_work(server):
    """1 MiB of JSON, 10 levels deep: read and judged on its content (a wrong login, 401)."""
    nested = b'{"a": ' * 9 + b"1" + b"}" * 9
    body = b'{"username": "nobody", "password": "' + b"y" * (1 << 20) + b'", "x": ' + nested + b"}"
    r = _post(server, "/auth/token", body, {})
    assert (r.status_code, r.headers["Content-Type"]) == (401, "application/problem+json")
