"""Bearer tokens from an external OpenID Connect provider (RS256, keys from its JWKS).

flask-jwt-extended has no JWKS support; PyJWT's PyJWKClient fetches and caches the
provider's keys. Users are mapped by `sub` (created on first sight, named `oidc:<sub>`) and their global
role comes from a configured claim (`CANOPY_OIDC_ROLE_CLAIM`).
"""

from __future__ import annotations

from functools import lru_cache

import requests
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientError

from db.access import Principal
from db.pool import get_pool

from ..errors import Unauthorized
from ..settings import Settings

_ROLES = {"admin", "analyst", "viewer"}


@lru_cache(maxsize=4)
def _client(jwks_url: str) -> PyJWKClient:
    return PyJWKClient(jwks_url, cache_keys=True, lifespan=600, timeout=5)


@lru_cache(maxsize=4)
def _discover(issuer: str) -> str:
    response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=5)
    response.raise_for_status()
    return response.json()["jwks_uri"]


def signing_key(settings: Settings, header: dict):
    try:
        url = settings.oidc_jwks_url or _discover(settings.oidc_issuer)
        return _client(url).get_signing_key(header.get("kid")).key
    except (PyJWKClientError, requests.RequestException, KeyError) as err:
        raise Unauthorized(f"the identity provider's signing key cannot be found: {err}")


def user_for(settings: Settings, payload: dict) -> Principal:
    subject = str(payload.get("sub") or "")
    if not subject:
        raise Unauthorized("the identity provider's token has no subject")
    role = payload.get(settings.oidc_role_claim)
    role = role if role in _ROLES else "viewer"
    with get_pool().connection() as conn:
        row = conn.execute(
            "INSERT INTO users (username, oidc_subject, role) VALUES (%s, %s, %s) "
            "ON CONFLICT (oidc_subject) DO UPDATE SET role = EXCLUDED.role "
            "RETURNING id, role, active", (f"oidc:{subject}", subject, role)
        ).fetchone()
    if not row[2]:
        raise Unauthorized("this account is disabled")
    return Principal(user_id=row[0], role=row[1])
