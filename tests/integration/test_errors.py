"""The server-wide error guard: whatever goes wrong, a client gets application/problem+json
carrying the request id, and the log gets the traceback under the same id.

A view that fails on purpose cannot be added to the gunicorn server, so this file builds the
real application in-process with `create_app(settings)` (same PostGIS and Redis as the
suite) and adds one such view before serving it through Flask's test client.
"""

from __future__ import annotations

import logging

import pytest

from tests.conftest import JWT_SECRET


@pytest.fixture(scope="module")
def client(services, tmp_path_factory):
    from server.app import create_app
    from server.settings import get_settings

    run = tmp_path_factory.mktemp("in-process")
    with pytest.MonkeyPatch.context() as env:
        for name, value in (("DATABASE_URL", services[0]), ("REDIS_URL", services[1]),
                            ("CANOPY_JWT_SECRET", JWT_SECRET), ("CANOPY_DATA_DIR", str(run)),
                            ("CANOPY_RUN_DIR", str(run / "run"))):
            env.setenv(name, value)
        get_settings.cache_clear()
        app = create_app(get_settings())
    get_settings.cache_clear()

    def broken():
        raise ZeroDivisionError("a bug")

    app.add_url_rule("/test/broken", "broken", broken, methods=["GET", "POST"])
    return app.test_client()


def test_an_unexpected_exception_is_a_problem_with_the_request_id(client, caplog):
    caplog.set_level(logging.ERROR)
    r = client.get("/test/broken", headers={"X-Request-Id": "req-14-guard"})
    assert r.status_code == 500
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.headers["X-Request-Id"] == "req-14-guard"
    body = r.get_json()
    assert body["status"] == 500 and body["code"] == "ServerError" and body["request_id"] == "req-14-guard"
    assert "a bug" not in r.get_data(as_text=True)              # no internals leak to the client
    logged = [rec for rec in caplog.records if rec.getMessage() == "unhandled error"]
    assert logged and logged[-1].exc_info[0] is ZeroDivisionError
    assert logged[-1].fields == {"request_id": "req-14-guard", "method": "GET", "path": "/test/broken"}


def test_werkzeug_errors_are_problems_not_html(client):
    for method, path, status in (("GET", "/no/such/route", 404), ("PUT", "/test/broken", 405),
                                 ("DELETE", "/collections", 405)):
        r = client.open(path, method=method, headers={"X-Request-Id": f"req-{status}"})
        assert r.status_code == status, (path, r.get_data(as_text=True))
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.get_json()["request_id"] == f"req-{status}"
        if status == 405:
            assert "GET" in r.headers["Allow"]
