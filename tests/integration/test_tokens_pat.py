"""Personal access tokens against the real server: made, listed and revoked by their
user, read by GDAL's OAPIF driver with a static header, and narrowed by their scope
and read-only flag exactly as the access policy says."""

from __future__ import annotations

import os
import re
import subprocess

import psycopg
import pytest
import requests

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pat_world(db_url, make_user):
    """Two private projects A (3 plots) and B (2 plots); an editor of both."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = {}
        for name, n in (("A", 3), ("B", 2)):
            pid = conn.execute("INSERT INTO projects (name, visibility) VALUES (%s, 'private') RETURNING id",
                               (f"pat {name}",)).fetchone()[0]
            plots = [conn.execute("INSERT INTO plots (project_id, name, geom) VALUES (%s, %s, "
                                  "ST_Multi(ST_MakeEnvelope(%s, 40, %s, 40.01, 4326))) RETURNING id",
                                  (pid, f"{name}{i}", 10 + i / 10, 10.01 + i / 10)).fetchone()[0]
                     for i in range(n)]
            ids[name] = {"project": pid, "plots": plots}
    user = make_user("viewer", {ids["A"]["project"]: "editor", ids["B"]["project"]: "editor"})
    return {"ids": ids, "user": user, "session": {"Authorization": f"Bearer {user.token}"}}


def _make(server, session, **body) -> dict:
    r = requests.post(f"{server}/auth/tokens", json={"name": "QGIS laptop", **body}, headers=session)
    assert r.status_code == 201, r.text
    return r.json()


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_create_list_revoke(server, pat_world, make_user):
    session = pat_world["session"]
    made = _make(server, session, expires_in_days=30)
    secret = made["token"]
    assert re.fullmatch(r"canopy_pat_[A-Za-z0-9_-]{43}", secret)
    assert made["read_only"] is True and made["project_id"] is None and made["name"] == "QGIS laptop"
    listed = requests.get(f"{server}/auth/tokens", headers=session)
    assert listed.status_code == 200
    assert secret not in listed.text and secret[15:] not in listed.text
    mine = [t for t in listed.json()["tokens"] if t["id"] == made["id"]]
    assert len(mine) == 1 and "token" not in mine[0] and mine[0]["prefix"] == secret[:15] + "…"
    assert mine[0]["last_used_at"] is None
    # the token works, and its use is recorded
    me = requests.get(f"{server}/auth/me", headers=_bearer(secret))
    assert me.status_code == 200 and me.json()["id"] == pat_world["user"].id
    used = [t for t in requests.get(f"{server}/auth/tokens", headers=session).json()["tokens"]
            if t["id"] == made["id"]][0]
    assert used["last_used_at"] is not None
    # a token cannot make or list tokens
    assert requests.get(f"{server}/auth/tokens", headers=_bearer(secret)).status_code == 403
    assert requests.post(f"{server}/auth/tokens", json={"name": "x"}, headers=_bearer(secret)).status_code == 403
    # revoked: 401 everywhere, and gone from the list
    assert requests.delete(f"{server}/auth/tokens/{made['id']}", headers=session).status_code == 204
    r = requests.get(f"{server}/collections/plots/items", headers=_bearer(secret))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert made["id"] not in [t["id"] for t in requests.get(f"{server}/auth/tokens", headers=session).json()["tokens"]]
    assert requests.delete(f"{server}/auth/tokens/{made['id']}", headers=session).status_code == 404
    # another user cannot revoke someone's token
    other = _make(server, session)
    stranger = _bearer(make_user("viewer").token)
    assert requests.delete(f"{server}/auth/tokens/{other['id']}", headers=stranger).status_code == 404
    assert requests.get(f"{server}/auth/me", headers=_bearer(other["token"])).status_code == 200


def test_bad_requests(server, pat_world):
    session = pat_world["session"]
    for body, word in (({"name": ""}, "name"), ({"name": "x", "expires_in_days": 1000}, "expires_in_days"),
                       ({"name": "x", "read_only": "yes"}, "read_only"), ({"name": "x", "scope": 1}, "unknown"),
                       ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at")):
        r = requests.post(f"{server}/auth/tokens", json=body, headers=session)
        assert r.status_code == 400 and word in r.json()["detail"], (body, r.text)
    # a project the user cannot see is a 404, as anywhere else
    r = requests.post(f"{server}/auth/tokens", json={"name": "x", "project": 10**9}, headers=session)
    assert r.status_code == 404
    assert requests.post(f"{server}/auth/tokens", json={"name": "x"}).status_code == 401


def test_ogrinfo_oapif_with_static_header(server, pat_world):
    """GDAL reads project A's private plots with the token as a static header."""
    a = pat_world["ids"]["A"]
    secret = _make(server, pat_world["session"], project=a["project"])["token"]
    env = dict(os.environ, GDAL_HTTP_HEADERS=f"Authorization: Bearer {secret}")
    out = subprocess.run(["ogrinfo", "-ro", "-so", f"OAPIF:{server}/collections/plots", "plots"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert re.search(r"Feature Count: (\d+)", out.stdout).group(1) == str(len(a["plots"]))
    names = subprocess.run(["ogrinfo", "-ro", "-q", f"OAPIF:{server}/collections/plots", "plots", "-fields=YES",
                            "-geom=NO"], env=env, capture_output=True, text=True, timeout=60).stdout
    assert sorted(re.findall(r"name \(String\) = (\S+)", names)) == ["A0", "A1", "A2"]
    # without the header GDAL sees none of the private plots
    bare = subprocess.run(["ogrinfo", "-ro", "-q", f"OAPIF:{server}/collections/plots", "plots", "-geom=NO"],
                          capture_output=True, text=True, timeout=60).stdout
    assert not re.findall(r"name \(String\) = A\d", bare)


def test_scope_hides_other_projects(server, pat_world):
    a, b = pat_world["ids"]["A"], pat_world["ids"]["B"]
    scoped = _bearer(_make(server, pat_world["session"], project=a["project"])["token"])
    assert requests.get(f"{server}/collections/plots/items/{b['plots'][0]}", headers=scoped).status_code == 404
    assert requests.get(f"{server}/collections/plots/items/{a['plots'][0]}", headers=scoped).status_code == 200
    page = requests.get(f"{server}/collections/plots/items", params={"limit": 1000}, headers=scoped).json()
    assert sorted(f["id"] for f in page["features"]) == sorted(a["plots"])
    assert requests.get(f"{server}/projects/{b['project']}", headers=scoped).status_code == 404
    assert [p["id"] for p in requests.get(f"{server}/projects", headers=scoped).json()["projects"]] == [a["project"]]
    # the session token of the same user sees both (item by item: other tests' public plots
    # may fill any page of the whole collection)
    assert [requests.get(f"{server}/collections/plots/items/{pid}", headers=pat_world["session"]).status_code
            for pid in a["plots"] + b["plots"]] == [200] * 5
    # answers depend on the token: no cache may keep them for another
    r = requests.get(f"{server}/collections/plots/items/{a['plots'][0]}", headers=scoped)
    assert "Authorization" in r.headers["Vary"] and r.headers["Cache-Control"].startswith("private")


def test_scope_reaches_nothing_outside_its_project_creation_included(server, db_url, make_user):
    """A read-write token scoped to one project of an analyst (who may create projects and
    run project-less processes with a session) creates nothing outside that project."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        a, b = (conn.execute("INSERT INTO projects (name, visibility) VALUES (%s, 'private') RETURNING id",
                             (f"scope {n}",)).fetchone()[0] for n in "AB")
    user = make_user("analyst", {a: "owner", b: "owner"})
    session = {"Authorization": f"Bearer {user.token}"}
    scoped = _bearer(_make(server, session, project=a, read_only=False)["token"])
    everywhere = _bearer(_make(server, session, read_only=False)["token"])
    r = requests.post(f"{server}/projects", json={"name": "from a scoped token"}, headers=scoped)
    assert r.status_code == 403 and f"scoped to project {a}" in r.json()["detail"], r.text
    r = requests.post(f"{server}/processes/echo/execution", json={"inputs": {"message": "x"}}, headers=scoped)
    assert r.status_code == 403 and f"scoped to project {a}" in r.json()["detail"], r.text
    # the signed-in user shows only the token's project
    me = requests.get(f"{server}/auth/me", headers=scoped)
    assert me.status_code == 200 and [p["id"] for p in me.json()["projects"]] == [a], me.text
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM projects WHERE created_by = %s", (user.id,)).fetchone()[0] == 0
    # inside its project it still works; an unscoped token (and the session) still create
    assert requests.patch(f"{server}/projects/{a}", json={"name": "scope A2"}, headers=scoped).status_code == 200
    assert requests.post(f"{server}/projects", json={"name": "by session"}, headers=session).status_code == 201
    assert requests.post(f"{server}/projects", json={"name": "by token"}, headers=everywhere).status_code == 201
    assert {p["id"] for p in requests.get(f"{server}/auth/me", headers=everywhere).json()["projects"]} >= {a, b}


def _feature(project: int) -> dict:
    return {"type": "Feature", "properties": {"project_id": project, "name": "by token"},
            "geometry": {"type": "Polygon", "coordinates": [[[10, 40], [10.01, 40], [10.01, 40.01], [10, 40]]]}}


def test_read_only_and_read_write(server, pat_world):
    a, b = pat_world["ids"]["A"], pat_world["ids"]["B"]
    ro = _bearer(_make(server, pat_world["session"])["token"])
    r = requests.post(f"{server}/collections/plots/items", json=_feature(a["project"]),
                      headers={**ro, "Content-Type": "application/geo+json"})
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    item = requests.get(f"{server}/collections/plots/items/{a['plots'][0]}", headers=ro)
    assert item.status_code == 200
    r = requests.delete(f"{server}/collections/plots/items/{a['plots'][0]}",
                        headers={**ro, "If-Match": item.headers["ETag"]})
    assert r.status_code == 403
    # a CQL2 JSON query POSTed is a read
    q = requests.post(f"{server}/collections/plots/items", json={"op": "=", "args": [{"property": "name"}, "A1"]},
                      headers=ro)
    assert q.status_code == 200 and [f["properties"]["name"] for f in q.json()["features"]] == ["A1"]
    rw = _bearer(_make(server, pat_world["session"], read_only=False, project=a["project"])["token"])
    made = requests.post(f"{server}/collections/plots/items", json=_feature(a["project"]),
                         headers={**rw, "Content-Type": "application/geo+json"})
    assert made.status_code == 201, made.text
    # ... but only in its project
    r = requests.post(f"{server}/collections/plots/items", json=_feature(b["project"]),
                      headers={**rw, "Content-Type": "application/geo+json"})
    assert r.status_code == 400 and f"project_id {b['project']} does not exist" in r.json()["description"]


def test_expired_and_password_change(server, db_url, pat_world, make_user):
    token = _make(server, pat_world["session"])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE personal_tokens SET expires_at = now() - interval '1 second' WHERE id = %s",
                     (token["id"],))
    r = requests.get(f"{server}/collections/plots/items", headers=_bearer(token["token"]))
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert requests.get(f"{server}/collections/plots/items",
                        headers=_bearer("canopy_pat_" + "x" * 43)).status_code == 401
    # a password change voids the user's tokens, as it voids their sessions
    from tests.conftest import PASSWORD
    user = make_user("viewer")
    session = _bearer(user.token)
    secret = _make(server, session)["token"]
    assert requests.get(f"{server}/auth/me", headers=_bearer(secret)).status_code == 200
    assert requests.post(f"{server}/auth/password", json={"old_password": PASSWORD, "new_password": "another pass"},
                         headers=session).status_code == 204
    assert requests.get(f"{server}/auth/me", headers=_bearer(secret)).status_code == 401


def test_secret_never_logged(server, pat_world):
    secret = _make(server, pat_world["session"])["token"]
    requests.get(f"{server}/collections/plots/items", headers=_bearer(secret))
    requests.get(f"{server}/auth/tokens", headers=pat_world["session"])
    log = server.log.read_text()
    assert "/auth/tokens" in log
    assert secret not in log and secret[15:] not in log


def test_openapi_declares_tokens(server):
    doc = requests.get(f"{server}/openapi", params={"f": "json"}).json()
    assert set(doc["paths"]["/auth/tokens"]) == {"get", "post"}
    assert "delete" in doc["paths"]["/auth/tokens/{tokenId}"]
    assert "201" in doc["paths"]["/auth/tokens"]["post"]["responses"]
