"""Bearer tokens from an external OpenID provider: a local JWKS served by the test."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import running_server

AUDIENCE = "canopy-oidc-test"


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def provider():
    """A minimal OpenID provider: discovery document and JWKS on loopback."""
    key = _key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
            body = {"/.well-known/openid-configuration": {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"},
                    "/jwks": {"keys": [jwk]}}.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body or {}).encode())

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", key
    httpd.shutdown()


@pytest.fixture(scope="module")
def oidc_server(services, provider, tmp_path_factory):
    issuer, _ = provider
    with running_server(services, tmp_path_factory.mktemp("oidc"), CANOPY_OIDC_ISSUER=issuer,
                        CANOPY_OIDC_AUDIENCE=AUDIENCE, CANOPY_OIDC_ROLE_CLAIM="canopy_role") as base:
        yield base


def _token(issuer: str, key, kid: str = "k1", **over) -> str:
    now = datetime.now(timezone.utc)
    claims = {"iss": issuer, "sub": "alice-123", "aud": AUDIENCE, "iat": now, "exp": now + timedelta(minutes=5),
              "canopy_role": "analyst"}
    claims.update(over)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_good_rs256_token_is_accepted_and_mapped_to_a_user(oidc_server, provider):
    issuer, key = provider
    r = requests.get(f"{oidc_server}/auth/me", headers={"Authorization": f"Bearer {_token(issuer, key)}"})
    assert r.status_code == 200, r.text
    assert r.json()["username"] == "oidc:alice-123" and r.json()["role"] == "analyst"
    # the role claim decides what the user may do: an analyst may create a project
    r = requests.post(f"{oidc_server}/projects", json={"name": "alice's", "visibility": "private"},
                      headers={"Authorization": f"Bearer {_token(issuer, key)}"})
    assert r.status_code == 201


def test_tokens_signed_by_another_key_or_for_another_audience_are_refused(oidc_server, provider):
    issuer, key = provider
    refused = {
        "another key": _token(issuer, _key()),
        "unknown kid": _token(issuer, _key(), kid="k2"),
        "another audience": _token(issuer, key, aud="someone-else"),
        "expired": _token(issuer, key, exp=datetime.now(timezone.utc) - timedelta(minutes=1)),
        "HS256 with the public key": jwt.encode(
            {"iss": issuer, "sub": "x", "aud": AUDIENCE, "exp": datetime.now(timezone.utc) + timedelta(minutes=5)},
            "a" * 64, algorithm="HS256"),
    }
    for name, token in refused.items():
        r = requests.get(f"{oidc_server}/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (name, r.text)


def test_local_tokens_still_work_beside_oidc(oidc_server, services):
    from argon2 import PasswordHasher
    import psycopg
    with psycopg.connect(services[0], autocommit=True) as conn:
        conn.execute("INSERT INTO users (username, password_hash) VALUES ('local-oidc', %s) "
                     "ON CONFLICT DO NOTHING", (PasswordHasher().hash("local password"),))
    r = requests.post(f"{oidc_server}/auth/token", json={"username": "local-oidc", "password": "local password"})
    assert r.status_code == 200
    me = requests.get(f"{oidc_server}/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json()["username"] == "local-oidc"
