"""The access policy on every route family, and the token hardening, against the real server."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import jwt
import psycopg
import pytest
import requests

from tests.conftest import JWT_SECRET as SECRET, PASSWORD

CALLERS = ["anonymous", "outsider", "viewer", "editor", "owner", "admin"]


@pytest.fixture(scope="module")
def world(db_url, make_user, server):
    """A public and a private project, each with a plot, a scan and a raster, and one
    caller of each kind (the outsider is a viewer of a third project)."""
    objects: dict[str, dict] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        other = conn.execute("INSERT INTO projects (name, visibility) VALUES ('other', 'private') "
                             "RETURNING id").fetchone()[0]
        for vis in ("public", "private"):
            pid = conn.execute("INSERT INTO projects (name, visibility) VALUES (%s, %s) RETURNING id",
                               (f"matrix {vis}", vis)).fetchone()[0]
            scan = conn.execute("INSERT INTO scans (project_id, name, status, footprint) VALUES (%s, 's', 'ready', "
                                "ST_MakeEnvelope(30, 30, 30.1, 30.1, 4326)) RETURNING id", (pid,)).fetchone()[0]
            raster = conn.execute("INSERT INTO rasters (project_id, scan_id, kind, storage_uri) VALUES "
                                  "(%s, %s, 'chm', 'none') RETURNING id", (pid, scan)).fetchone()[0]
            objects[vis] = {"project": pid, "scan": scan, "raster": raster}
    users: dict[str, dict] = {"anonymous": {}}
    pub, priv = objects["public"]["project"], objects["private"]["project"]
    for caller, role, members in (("outsider", "viewer", {other: "viewer"}),
                                  ("viewer", "viewer", {pub: "viewer", priv: "viewer"}),
                                  ("editor", "viewer", {pub: "editor", priv: "editor"}),
                                  ("owner", "analyst", {pub: "owner", priv: "owner"}),
                                  ("admin", "admin", {})):
        user = make_user(role, members)
        users[caller] = {"Authorization": f"Bearer {user.token}"}
        if caller == "owner":
            for vis in ("public", "private"):
                objects[vis]["owner_id"] = user.id
                meta = ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in
                                {"filename": "o.laz", "project": objects[vis]["project"], "name": "o"}.items())
                objects[vis]["upload"] = requests.post(
                    f"{server}/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1000",
                                                  "Upload-Metadata": meta, **users[caller]}).headers["Location"]
    objects["users"] = users
    return objects


def _plot(db_url: str, project: int) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, 'm', "
                            "ST_Multi(ST_MakeEnvelope(30, 30, 30.01, 30.01, 4326))) RETURNING id",
                            (project,)).fetchone()[0]


def _feature(project: int) -> dict:
    return {"type": "Feature", "properties": {"project_id": project, "name": "made"},
            "geometry": {"type": "Polygon", "coordinates": [[[30, 30], [30.01, 30], [30.01, 30.01], [30, 30]]]}}


def _request(family: str, server: str, db_url: str, objs: dict, headers: dict) -> int | str:
    pid = objs["project"]
    if family == "list plots":
        _plot(db_url, pid)
        page = requests.get(f"{server}/collections/plots/items", params={"project_id": pid}, headers=headers).json()
        return "sees" if page["numberReturned"] > 0 else "empty"
    if family == "get plot":
        return requests.get(f"{server}/collections/plots/items/{_plot(db_url, pid)}", headers=headers).status_code
    if family == "create plot":
        return requests.post(f"{server}/collections/plots/items", data=json.dumps(_feature(pid)),
                             headers={"Content-Type": "application/geo+json", **headers}).status_code
    if family == "patch plot":
        return requests.patch(f"{server}/collections/plots/items/{_plot(db_url, pid)}",
                              json={"type": "Feature", "properties": {"name": "p"}},
                              headers={"If-Match": '"1"', **headers}).status_code
    if family == "delete plot":
        return requests.delete(f"{server}/collections/plots/items/{_plot(db_url, pid)}",
                               headers={"If-Match": '"1"', **headers}).status_code
    if family == "get scan":
        return requests.get(f"{server}/collections/scans/items/{objs['scan']}", headers=headers).status_code
    if family == "get raster":
        return requests.get(f"{server}/collections/rasters/items/{objs['raster']}", headers=headers).status_code
    if family == "get project":
        return requests.get(f"{server}/projects/{pid}", headers=headers).status_code
    if family == "manage members":
        with psycopg.connect(db_url, autocommit=True) as conn:
            uid = conn.execute("INSERT INTO users (username) VALUES (md5(random()::text)) RETURNING id").fetchone()[0]
        return requests.put(f"{server}/projects/{pid}/members/{uid}", json={"role": "viewer"},
                            headers=headers).status_code
    if family == "admin users":
        return requests.get(f"{server}/admin/users", headers=headers).status_code
    if family in ("get job", "dismiss job"):
        with psycopg.connect(db_url, autocommit=True) as conn:
            job = conn.execute("INSERT INTO jobs (identifier, process_id, status, owner_id, project_id, inputs) "
                               "VALUES (md5(random()::text), 'echo', 'accepted', %s, %s, '{}') RETURNING identifier",
                               (objs["owner_id"], pid)).fetchone()[0]
        method = requests.get if family == "get job" else requests.delete
        return method(f"{server}/jobs/{job}", headers=headers).status_code
    if family == "upload to project":
        meta = ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in
                        {"filename": "m.laz", "project": pid, "name": "m"}.items())
        return requests.post(f"{server}/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1000",
                                                           "Upload-Metadata": meta, **headers}).status_code
    if family == "someone's upload":
        return requests.head(objs["upload"], headers={"Tus-Resumable": "1.0.0", **headers}).status_code
    raise AssertionError(family)


# (public project, private project); an anonymous write is a 401 before anything is looked up
#                 anonymous  outsider   viewer  editor  owner  admin
MATRIX = {
    "list plots":     [("sees", "empty"), ("sees", "empty"), ("sees", "sees"), ("sees", "sees"),
                       ("sees", "sees"), ("sees", "sees")],
    "get plot":       [(200, 404), (200, 404), (200, 200), (200, 200), (200, 200), (200, 200)],
    "create plot":    [(401, 401), (403, 400), (403, 403), (201, 201), (201, 201), (201, 201)],
    "patch plot":     [(401, 401), (403, 404), (403, 403), (200, 200), (200, 200), (200, 200)],
    "delete plot":    [(401, 401), (403, 404), (403, 403), (200, 200), (200, 200), (200, 200)],
    "get scan":       [(200, 404), (200, 404), (200, 200), (200, 200), (200, 200), (200, 200)],
    "get raster":     [(200, 404), (200, 404), (200, 200), (200, 200), (200, 200), (200, 200)],
    "get project":    [(200, 404), (200, 404), (200, 200), (200, 200), (200, 200), (200, 200)],
    "manage members": [(401, 401), (403, 404), (403, 403), (403, 403), (200, 200), (200, 200)],
    "admin users":    [(401, 401), (403, 403), (403, 403), (403, 403), (403, 403), (200, 200)],
    "get job":        [(200, 404), (200, 404), (200, 200), (200, 200), (200, 200), (200, 200)],
    "dismiss job":    [(401, 401), (403, 404), (403, 403), (200, 200), (200, 200), (200, 200)],
    "upload to project": [(401, 401), (403, 404), (403, 403), (201, 201), (201, 201), (201, 201)],
    "someone's upload": [(401, 401), (404, 404), (404, 404), (404, 404), (200, 200), (200, 200)],
}


@pytest.mark.parametrize("family", list(MATRIX))
def test_access_matrix(server, db_url, world, family):
    got, want = {}, {}
    for i, caller in enumerate(CALLERS):
        for j, vis in enumerate(("public", "private")):
            got[(caller, vis)] = _request(family, server, db_url, world[vis], world["users"][caller])
            want[(caller, vis)] = MATRIX[family][i][j]
    assert got == want


def test_denied_writes_change_nothing(server, db_url, world):
    plot = _plot(db_url, world["private"]["project"])
    for caller in ("anonymous", "outsider", "viewer"):
        requests.patch(f"{server}/collections/plots/items/{plot}", json={"type": "Feature", "properties": {
            "name": "hacked"}}, headers={"If-Match": '"1"', **world["users"][caller]})
        requests.delete(f"{server}/collections/plots/items/{plot}",
                        headers={"If-Match": '"1"', **world["users"][caller]})
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT name, version FROM plots WHERE id = %s", (plot,)).fetchone() == ("m", 1)


def test_cannot_move_a_plot_into_a_project_one_cannot_write(server, db_url, world, make_user):
    pub = world["public"]["project"]
    token = make_user("viewer", {pub: "editor"}).token          # editor of the public project only
    plot = _plot(db_url, pub)
    r = requests.patch(f"{server}/collections/plots/items/{plot}",
                       json={"type": "Feature", "properties": {"project_id": world["private"]["project"]}},
                       headers={"If-Match": '"1"', "Authorization": f"Bearer {token}"})
    assert r.status_code == 400 and "does not exist" in r.text     # invisible project: looks missing
    r = requests.patch(f"{server}/collections/plots/items/{plot}",
                       json={"type": "Feature", "properties": {"project_id": pub}},
                       headers={"If-Match": '"1"', "Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["properties"]["project_id"] == pub
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT project_id FROM plots WHERE id = %s", (plot,)).fetchone()[0] == pub


def test_users_cannot_change_their_own_role(server, make_user):
    uid, token, _ = make_user("viewer")
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.patch(f"{server}/admin/users/{uid}", json={"role": "admin"}, headers=headers).status_code == 403
    assert requests.patch(f"{server}/auth/me", json={"role": "admin"}, headers=headers).status_code == 405
    assert requests.get(f"{server}/auth/me", headers=headers).json()["role"] == "viewer"


def test_private_lists_count_only_what_the_caller_sees(server, db_url, world):
    priv = world["private"]["project"]
    for _ in range(3):
        _plot(db_url, priv)
    anon = requests.get(f"{server}/collections/plots/items", params={"project_id": priv}).json()
    assert anon["numberMatched"] == 0 and anon["features"] == []
    viewer = requests.get(f"{server}/collections/plots/items", params={"project_id": priv},
                          headers=world["users"]["viewer"]).json()
    assert viewer["numberMatched"] >= 3


# -- broken authentication -----------------------------------------------------------------------

def _claims(server: str, **over) -> dict:
    now = datetime.now(timezone.utc)
    base = {"sub": "1", "iss": server, "aud": "canopy", "iat": now, "nbf": now, "exp": now + timedelta(minutes=5),
            "type": "access", "fresh": False, "jti": "x", "sid": "s", "epoch": 0}
    base.update(over)
    return base


def test_bad_tokens_get_401(server, db_url):
    with psycopg.connect(db_url) as conn:
        admin_id = conn.execute("SELECT id FROM users WHERE role = 'admin' ORDER BY id LIMIT 1").fetchone()
    sub = str(admin_id[0]) if admin_id else "1"
    header = {"alg": "none", "typ": "JWT"}
    import base64

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d, default=str).encode()).decode().rstrip("=")

    now = int(time.time())
    none_token = f"{b64(header)}.{b64({'sub': sub, 'iss': server, 'aud': 'canopy', 'exp': now + 300, 'type': 'access', 'epoch': 0})}."
    bad = {
        "alg none": none_token,
        "wrong signature": jwt.encode(_claims(server, sub=sub), "another-secret-" + "y" * 32, algorithm="HS256"),
        "wrong audience": jwt.encode(_claims(server, sub=sub, aud="someone-else"), SECRET, algorithm="HS256"),
        "wrong issuer": jwt.encode(_claims(server, sub=sub, iss="https://evil.example"), SECRET, algorithm="HS256"),
        "expired": jwt.encode(_claims(server, sub=sub, exp=datetime.now(timezone.utc) - timedelta(minutes=1)),
                              SECRET, algorithm="HS256"),
        "garbage": "not.a.token",
    }
    for name, token in bad.items():
        r = requests.get(f"{server}/collections/plots/items", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (name, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert requests.get(f"{server}/admin/users",
                            headers={"Authorization": f"Bearer {token}"}).status_code == 401, name


def _login(server: str, username: str, client: str = "10.9.9.1", password: str = PASSWORD) -> requests.Response:
    return requests.post(f"{server}/auth/token", json={"username": username, "password": password},
                         headers={"X-Forwarded-For": client})


def test_logout_revokes_access_and_refresh(server, make_user):
    tokens = _login(server, make_user("viewer").username).json()
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert requests.get(f"{server}/auth/me", headers={"Authorization": f"Bearer {access}"}).status_code == 200
    r = requests.post(f"{server}/auth/refresh", headers={"Authorization": f"Bearer {refresh}"})
    assert r.status_code == 200
    renewed = r.json()["access_token"]
    assert requests.get(f"{server}/auth/me", headers={"Authorization": f"Bearer {renewed}"}).status_code == 200
    # a refresh token is not an access token, nor the other way round
    assert requests.get(f"{server}/auth/me", headers={"Authorization": f"Bearer {refresh}"}).status_code == 401
    assert requests.post(f"{server}/auth/refresh", headers={"Authorization": f"Bearer {access}"}).status_code == 401
    assert requests.post(f"{server}/auth/logout", headers={"Authorization": f"Bearer {access}"}).status_code == 204
    for token in (access, renewed):
        assert requests.get(f"{server}/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert requests.post(f"{server}/auth/refresh", headers={"Authorization": f"Bearer {refresh}"}).status_code == 401


def test_password_change_revokes_every_token(server, make_user):
    user = make_user("viewer")
    other_session = _login(server, user.username).json()["access_token"]
    headers = {"Authorization": f"Bearer {user.token}"}
    r = requests.post(f"{server}/auth/password", json={"old_password": PASSWORD, "new_password": "n3w password!"},
                      headers=headers)
    assert r.status_code == 204
    for token in (user.token, other_session):
        assert requests.get(f"{server}/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert _login(server, user.username).status_code == 401
    assert _login(server, user.username, password="n3w password!").status_code == 200


def test_login_is_rate_limited_per_client(server, make_user):
    user = make_user("viewer")
    statuses = [_login(server, user.username, client="10.7.7.7", password="wrong").status_code for _ in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    # the right password from that client is refused too until the window passes; another client is not
    assert _login(server, user.username, client="10.7.7.7").status_code == 429
    assert _login(server, user.username, client="10.7.7.8").status_code == 200


def test_secrets_never_reach_the_logs(server, make_user):
    user = make_user("viewer")
    requests.get(f"{server}/auth/me", headers={"Authorization": f"Bearer {user.token}"})
    requests.get(f"{server}/collections/plots/items", params={"token": user.token})
    log = server.log.read_text()
    assert "/auth/me" in log                     # requests are logged ...
    assert PASSWORD not in log and user.token not in log and user.token[-20:] not in log   # ... secrets are not


def test_openapi_declares_the_bearer_scheme(server):
    doc = requests.get(f"{server}/openapi?f=json").json()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    patch = doc["paths"]["/collections/plots/items/{featureId}"]["patch"]
    assert patch["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/collections/plots/items"]["get"]["security"] == [{}, {"bearerAuth": []}]
    assert doc["paths"]["/admin/users"]["get"]["security"] == [{"bearerAuth": []}]
    assert "/auth/token" in doc["paths"] and "/projects/{projectId}/members/{userId}" in doc["paths"]


def test_security_headers(server):
    r = requests.get(f"{server}/healthz")
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"


def test_cors_anonymous_reads_from_any_origin_by_default(server):
    page = {"Origin": "https://any.example"}
    for path in ("/collections/plots/items", "/collections/plots/items/99999999", "/processes",
                 "/processes/echo", "/collections/plots/queryables", "/"):
        r = requests.get(server + path, headers=page)
        assert r.headers.get("Access-Control-Allow-Origin") == "*", (path, r.status_code)
        assert "Access-Control-Allow-Credentials" not in r.headers
        assert {"ETag", "Link", "Location", "Canopy-Scan"} <= {
            h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    # anonymous only: a write, or a read with a token, grants nothing to an unconfigured origin
    assert "Access-Control-Allow-Origin" not in requests.post(f"{server}/uploads", headers=page).headers
    pre = requests.options(f"{server}/uploads", headers={**page, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and "POST" not in pre.headers["Access-Control-Allow-Methods"]


def test_cors_for_configured_web_map_origins(services, tmp_path, world, make_user):
    from tests.conftest import running_server, token_of
    site = {"Origin": "https://maps.example.org"}
    editor = make_user("viewer", {world["public"]["project"]: "editor"})
    with running_server(services, tmp_path, CANOPY_CORS_ORIGINS="https://maps.example.org") as cors_server:
        pre = requests.options(f"{cors_server}/collections/plots/items", headers={
            **site, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "Authorization"})
        assert pre.headers["Access-Control-Allow-Origin"] == "https://maps.example.org"
        assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
        assert pre.headers["Access-Control-Allow-Credentials"] == "true"
        r = requests.get(f"{cors_server}/collections", headers=site)
        assert r.headers["Access-Control-Allow-Origin"] == "https://maps.example.org"
        assert "Origin" in r.headers["Vary"] and r.headers["Access-Control-Allow-Credentials"] == "true"
        assert "ETag" in r.headers["Access-Control-Expose-Headers"]
        other = requests.get(f"{cors_server}/collections", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        # a browser upload (tus-js-client): the preflight of its POST, then every header it reads
        tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "1000", "Upload-Metadata": ",".join(
            f"{k} {base64.b64encode(str(v).encode()).decode()}"
            for k, v in {"filename": "c.laz", "project": world["public"]["project"], "name": "c"}.items())}
        pre = requests.options(f"{cors_server}/uploads", headers={
            **site, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,tus-resumable,upload-length,upload-metadata"})
        assert pre.status_code == 204 and "POST" in pre.headers["Access-Control-Allow-Methods"]
        assert {"authorization", "tus-resumable", "upload-length", "upload-metadata"} <= {
            h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
        token = {"Authorization": f"Bearer {token_of(cors_server, editor.username)}"}   # tokens name their issuer
        created = requests.post(f"{cors_server}/uploads", headers={**site, **tus, **token})
        assert created.status_code == 201, created.text
        assert created.headers["Access-Control-Allow-Origin"] == "https://maps.example.org"
        exposed = {h.strip() for h in created.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Location", "Upload-Offset", "Upload-Expires", "Tus-Resumable", "Canopy-Scan", "Canopy-Job",
                "Tus-Version", "Tus-Max-Size", "Tus-Extension", "Upload-Length", "ETag", "Link"} <= exposed


# -- OPTIONS with a token, malformed ids and text, the signing secret ----------------------------

def test_options_with_a_token_answers_on_every_route(server, db_url, world):
    owner, pid = world["users"]["owner"], world["private"]["project"]
    paths = ["/collections", "/collections/plots/items", f"/collections/plots/items/{_plot(db_url, pid)}",
             f"/projects/{pid}", f"/rasters/{world['private']['raster']}", "/jobs", "/processes", "/auth/me"]
    for path in paths:
        r = requests.options(server + path, headers=owner)
        assert r.status_code in (200, 204), (path, r.status_code, r.text)
        assert "GET" in r.headers["Allow"], (path, r.headers)
    item = requests.options(server + paths[2], headers=owner)
    assert {"PUT", "PATCH", "DELETE"} <= {m.strip() for m in item.headers["Allow"].split(",")}


def test_text_with_control_characters_is_a_400(server, world, admin_headers):
    owner = world["users"]["owner"]
    cases = [("POST", "/auth/token", {"username": "a\x00b", "password": "x"}, {"X-Forwarded-For": "10.8.8.8"}),
             ("POST", "/admin/users", {"username": "a\x00b", "password": "long enough"}, admin_headers),
             ("POST", "/projects", {"name": "bell\x07"}, owner),
             ("POST", "/processes/echo/execution", {"inputs": {"message": "a\x00"}}, owner),
             ("GET", "/jobs?processID=a%00b", None, owner)]
    for method, path, body, headers in cases:
        r = requests.request(method, server + path, json=body, headers=headers)
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert "control character U+00" in r.json()["detail"], r.text


def test_malformed_ids_in_urls_are_404(server, admin_headers):
    tus = {"Tus-Resumable": "1.0.0", **admin_headers}
    cases = [("GET", "/rasters/%C2%B9/tiles/WorldCRS84Quad"), ("GET", "/rasters/%D9%A1"),
             ("GET", "/projects/%D9%A1"), ("PATCH", "/admin/users/%D9%A1"), ("GET", "/projects/1%00"),
             ("GET", "/jobs/a%00b"), ("DELETE", "/jobs/%00"), ("HEAD", "/uploads/a%00b")]
    for method, path in cases:
        r = requests.request(method, server + path, headers=tus, json={} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        if method != "HEAD":
            assert r.headers["Content-Type"] == "application/problem+json", (path, r.text)


def _repository_secrets() -> set[str]:
    """Every value CANOPY_JWT_SECRET is given in the repository's deployment files and docs."""
    from tests.conftest import ROOT
    assignment = re.compile(r"CANOPY_JWT_SECRET\s*[:=]\s*[\"']?(?:\$\{CANOPY_JWT_SECRET:-)?([^\s\"'}]*)")
    files = [ROOT / "docker-compose.yml", ROOT / "README.md", ROOT / "Dockerfile", *ROOT.glob("*.env*"),
             *ROOT.glob(".env*")]
    return {m.group(1) for f in files if f.is_file() for m in assignment.finditer(f.read_text())}


def test_published_and_weak_secrets_are_refused():
    from server.settings import PUBLISHED_SECRETS, check_jwt_secret
    assert "change-me-to-a-long-random-secret" in PUBLISHED_SECRETS     # the compose file's old default
    assert _repository_secrets(), "the compose file sets CANOPY_JWT_SECRET"
    for secret in _repository_secrets() | PUBLISHED_SECRETS | {"", "too-short", "x" * 64, "test-secret-" + "x" * 32}:
        with pytest.raises(RuntimeError, match="CANOPY_JWT_SECRET"):
            check_jwt_secret(secret)
    check_jwt_secret(SECRET)                                            # random, as conftest makes it


def test_server_refuses_to_start_with_a_published_secret(services, tmp_path):
    from tests.conftest import running_server
    with pytest.raises(RuntimeError, match="published or guessable"):
        with running_server(services, tmp_path, CANOPY_JWT_SECRET="change-me-to-a-long-random-secret"):
            pass


def test_secret_file_is_made_once_and_signs_the_tokens(services, tmp_path, make_user):
    from server.settings import check_jwt_secret
    from tests.conftest import ROOT, running_server
    path = tmp_path / "volume" / "jwt-secret"
    env = dict(os.environ, CANOPY_JWT_SECRET_FILE=str(path))
    subprocess.run([sys.executable, "-m", "server", "secret"], env=env, cwd=ROOT, check=True)
    secret = path.read_text()
    subprocess.run([sys.executable, "-m", "server", "secret"], env=env, cwd=ROOT, check=True)
    assert path.read_text() == secret and path.stat().st_mode & 0o777 == 0o600
    weak = subprocess.run([sys.executable, "-m", "server", "secret"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(env, CANOPY_JWT_SECRET="change-me-to-a-long-random-secret"))
    assert weak.returncode != 0 and "published or guessable" in weak.stderr      # compose stops at this step
    check_jwt_secret(secret)
    user = make_user("viewer")
    (tmp_path / "run").mkdir()
    with running_server(services, tmp_path / "run", CANOPY_JWT_SECRET="", CANOPY_JWT_SECRET_FILE=str(path)) as own:
        r = requests.post(f"{own}/auth/token", json={"username": user.username, "password": PASSWORD},
                          headers={"X-Forwarded-For": "10.6.6.6"})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert jwt.decode(token, secret, algorithms=["HS256"], audience="canopy")["sub"] == str(user.id)
        assert requests.get(f"{own}/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_project_name_must_be_a_non_empty_string(server, make_user):
    auth = {"Authorization": f"Bearer {make_user('analyst').token}"}
    for name in ({}, ["x"], 7, "  "):
        r = requests.post(f"{server}/projects", json={"name": name}, headers=auth)
        assert r.status_code == 400 and "non-empty string" in r.json()["detail"], (name, r.text)
    made = requests.post(f"{server}/projects", json={"name": "stands 2026"}, headers=auth)
    assert made.status_code == 201 and made.json()["name"] == "stands 2026"
    r = requests.patch(f"{server}/projects/{made.json()['id']}", json={"name": {}}, headers=auth)
    assert r.status_code == 400
    assert requests.get(f"{server}/projects/{made.json()['id']}", headers=auth).json()["name"] == "stands 2026"


# -- issue 30: text PostgreSQL cannot store, the last admin, callbacks, odd tokens -----------------

def test_lone_surrogates_are_a_400_on_every_route(server, world, admin_headers):
    """JSON's "\\ud800" decodes to a lone UTF-16 surrogate, which no UTF-8 text (nor PostgreSQL)
    holds: one check where the body is read (server/inputs.py) answers 400 for every route."""
    owner, pid = world["users"]["owner"], world["private"]["project"]
    geo = {"Content-Type": "application/geo+json", **owner}
    feature = {"type": "Feature", "properties": {"project_id": pid, "name": "\ud800"},
               "geometry": {"type": "Polygon", "coordinates": [[[30, 30], [30.01, 30], [30.01, 30.01], [30, 30]]]}}
    cases = [("POST", "/auth/token", {"username": "\ud800", "password": "x"}, {"X-Forwarded-For": "10.8.8.9"}),
             ("POST", "/auth/token", {"username": "a", "password": "\udfff"}, {"X-Forwarded-For": "10.8.8.9"}),
             ("POST", "/admin/users", {"username": "\ud800", "password": "long enough"}, admin_headers),
             ("POST", "/projects", {"name": "x\ud83d"}, owner),
             ("PATCH", f"/projects/{pid}", {"name": "\ud800"}, owner),
             ("POST", "/auth/tokens", {"name": "\ud800"}, owner),
             ("POST", "/processes/echo/execution", {"inputs": {"message": "\ud800"}}, owner),
             ("POST", "/processes/echo/execution", {"inputs": {"\ud800": "x"}}, owner),
             ("POST", "/collections/plots/items", feature, geo),
             ("POST", "/collections/plots/items", {"op": "=", "args": [{"property": "name"}, "\ud800"]}, owner)]
    for method, path, body, headers in cases:
        r = requests.request(method, server + path, data=json.dumps(body),
                             headers={"Content-Type": "application/json", **headers})
        assert r.status_code == 400, (path, body, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert "surrogate U+D" in r.json()["detail"], r.text
    # the same character sent as raw (invalid) UTF-8 bytes, which Python's JSON decoder lets through
    r = requests.post(f"{server}/auth/token", data=b'{"username": "\xed\xa0\x80", "password": "x"}',
                      headers={"Content-Type": "application/json", "X-Forwarded-For": "10.8.8.9"})
    assert r.status_code == 400 and "surrogate U+D800" in r.json()["detail"], r.text
    # any JSON media type a route reads (`+json`) is checked as well
    r = requests.post(f"{server}/auth/token", data=b'{"username": "\\ud800", "password": "x"}',
                      headers={"Content-Type": "application/vnd.example+json", "X-Forwarded-For": "10.8.8.9"})
    assert r.status_code == 400 and "surrogate U+D800" in r.json()["detail"], r.text
    # a surrogate pair (an emoji) is one valid character: stored as sent
    made = requests.post(f"{server}/projects", json={"name": "pines \U0001F332"}, headers=owner)
    assert made.status_code == 201 and made.json()["name"] == "pines \U0001F332", made.text


def test_the_last_active_admin_can_be_neither_demoted_nor_deactivated(tmp_path):
    """A server of its own: the suite's shared database holds many administrators."""
    from bench.stack import add_user
    from tests.conftest import private_services, running_server, token_of
    with private_services("last-admin", "first-admin", role="admin") as (_pg, _rd, db, redis_url, first):
        with running_server((db, redis_url), tmp_path) as base:
            auth = {"Authorization": f"Bearer {token_of(base, 'first-admin')}"}
            second = add_user(db, "second-admin", PASSWORD, "admin")
            # two admins: either may be demoted
            r = requests.patch(f"{base}/admin/users/{second}", json={"role": "analyst"}, headers=auth)
            assert r.status_code == 200 and r.json()["role"] == "analyst", r.text
            for change in ({"role": "analyst"}, {"role": "viewer", "password": "a new password"},
                           {"active": False}, {"role": "admin", "active": False}):
                r = requests.patch(f"{base}/admin/users/{first}", json=change, headers=auth)
                assert r.status_code == 409, (change, r.text)
                assert r.headers["Content-Type"] == "application/problem+json"
                assert "last active administrator" in r.json()["detail"], r.text
            # nothing changed: the admin still signs in with the old password and administers
            auth = {"Authorization": f"Bearer {token_of(base, 'first-admin')}"}
            users = requests.get(f"{base}/admin/users", headers=auth).json()["users"]
            assert [(u["id"], u["role"], u["active"]) for u in users if u["id"] == first] == [(first, "admin", True)]
            # changes that keep an administrator are fine; so is demoting once another is active
            assert requests.patch(f"{base}/admin/users/{first}", json={"role": "admin", "active": True},
                                  headers=auth).status_code == 200
            assert requests.patch(f"{base}/admin/users/{second}", json={"role": "admin"},
                                  headers=auth).status_code == 200
            r = requests.patch(f"{base}/admin/users/{first}", json={"active": False}, headers=auth)
            assert r.status_code == 200 and r.json()["active"] is False, r.text
            # a disabled admin is no administrator: the remaining active one is the last
            auth = {"Authorization": f"Bearer {token_of(base, 'second-admin')}"}
            r = requests.patch(f"{base}/admin/users/{second}", json={"role": "viewer"}, headers=auth)
            assert r.status_code == 409 and "last active administrator" in r.json()["detail"], r.text


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]", "[64:ff9b::7f00:1]",
                                  "[64:ff9b::a9fe:a9fe]", "[64:ff9b:1::808:808]", "[2002:7f00:1::]",
                                  "[2002:a00:1::1]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]"])
def test_callbacks_refuse_ipv6_forms_of_inside_addresses(server, world, host):
    """IPv4-compatible, mapped, NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48), 6to4
    and Teredo addresses carry an IPv4 address; one inside the network is refused."""
    r = requests.post(f"{server}/processes/echo/execution", headers=world["users"]["owner"],
                      json={"inputs": {"message": "x"}, "subscriber": {"successUri": f"http://{host}/cb"}})
    assert r.status_code == 400 and "inside the network" in r.json()["detail"], r.text


def test_a_token_whose_subject_is_not_a_user_id_is_a_401(server):
    for sub in ("admin", "1.5", " 7", "١", "99999999999999999999", ""):
        token = jwt.encode(_claims(server, sub=sub), SECRET, algorithm="HS256")
        r = requests.get(f"{server}/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (sub, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert "subject" in r.json()["detail"], r.text


def test_creating_a_project_refuses_unknown_and_read_only_members(server, make_user):
    auth = {"Authorization": f"Bearer {make_user('analyst').token}"}
    for extra in ({"id": 1}, {"created_by": 1}, {"created_at": "2020-01-01T00:00:00Z"}, {"colour": "red"}):
        r = requests.post(f"{server}/projects", json={"name": "p", **extra}, headers=auth)
        assert r.status_code == 400, (extra, r.text)
        assert f"cannot set {next(iter(extra))}" in r.json()["detail"], r.text
    # PATCH words it the same way
    made = requests.post(f"{server}/projects", json={"name": "p", "visibility": "public"}, headers=auth)
    assert made.status_code == 201, made.text
    r = requests.patch(f"{server}/projects/{made.json()['id']}", json={"created_by": 1}, headers=auth)
    assert r.status_code == 400 and "cannot set created_by" in r.json()["detail"], r.text


def test_the_readme_names_the_members_routes_that_exist(server):
    from tests.conftest import ROOT
    readme = (ROOT / "README.md").read_text()
    paths = requests.get(f"{server}/openapi?f=json").json()["paths"]
    assert "post" not in paths["/projects/{projectId}/members"]
    assert "POST /projects/{id}/members" not in readme
    assert "PUT /projects/{id}/members/{user_id}" in readme and "put" in paths["/projects/{projectId}/members/{userId}"]
