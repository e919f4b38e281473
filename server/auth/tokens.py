"""JWT access and refresh tokens (flask-jwt-extended), revocation and the caller.

Tokens carry `sub` (user id), a session id `sid` shared by the access and refresh
token of one login, and the user's `epoch`. Logout puts the session id on a Redis
blocklist (with a TTL as long as the refresh token lives), which revokes both
tokens; a password change bumps the user's epoch, which voids every older token.
Roles are read from the database on each request, so a changed role applies at once.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import redis
from flask import Flask, g, request
from flask_jwt_extended import (JWTManager, create_access_token, create_refresh_token, get_jwt,
                                verify_jwt_in_request)
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import PyJWTError

from db.access import Principal
from db.pool import get_pool

from ..errors import Unauthorized
from ..settings import Settings
from . import oidc

AUDIENCE = "canopy"
_BLOCK_PREFIX = "canopy:revoked:"


def configure(app: Flask, settings: Settings) -> JWTManager:
    if len(settings.jwt_secret) < 32:
        raise RuntimeError("CANOPY_JWT_SECRET must be set to at least 32 random characters")
    app.config.update(
        JWT_SECRET_KEY=settings.jwt_secret,
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256", "RS256"] if settings.oidc_issuer else ["HS256"],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.access_token_minutes),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings.refresh_token_days),
        JWT_ENCODE_ISSUER=settings.public_url,
        JWT_DECODE_ISSUER=[settings.public_url] + ([settings.oidc_issuer] if settings.oidc_issuer else []),
        JWT_ENCODE_AUDIENCE=AUDIENCE,
        JWT_DECODE_AUDIENCE=[AUDIENCE] + ([settings.oidc_audience] if settings.oidc_audience else []),
        JWT_ERROR_MESSAGE_KEY="detail",
    )
    jwt = JWTManager(app)
    blocklist = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    app.extensions["canopy_blocklist"] = blocklist

    @jwt.decode_key_loader
    def _key(header: dict, payload: dict):
        # Our own tokens are HS256 with our secret; tokens of the OpenID provider are
        # RS256 with a key from its JWKS. Each issuer is held to its own algorithm.
        if settings.oidc_issuer and payload.get("iss") == settings.oidc_issuer:
            if header.get("alg") != "RS256":
                raise Unauthorized("tokens of the identity provider must be RS256")
            return oidc.signing_key(settings, header)
        if header.get("alg") != "HS256":
            raise Unauthorized("unexpected token algorithm")
        return settings.jwt_secret

    @jwt.token_in_blocklist_loader
    def _revoked(header: dict, payload: dict) -> bool:
        sid = payload.get("sid")
        return bool(sid) and blocklist.exists(_BLOCK_PREFIX + sid) == 1

    @jwt.user_lookup_loader
    def _user(header: dict, payload: dict):
        if settings.oidc_issuer and payload.get("iss") == settings.oidc_issuer:
            return oidc.user_for(settings, payload)
        with get_pool().connection() as conn:
            row = conn.execute("SELECT id, role, active, token_epoch FROM users WHERE id = %s",
                               (int(payload["sub"]),)).fetchone()
        if row is None or not row[2] or row[3] != payload.get("epoch"):
            return None
        return Principal(user_id=row[0], role=row[1])

    @jwt.user_lookup_error_loader
    def _gone(header, payload):
        raise Unauthorized("this token is no longer valid (user disabled or password changed)")

    def _reject(reason: str):
        raise Unauthorized(reason, headers={"WWW-Authenticate": 'Bearer realm="canopy", error="invalid_token"'})

    jwt.expired_token_loader(lambda h, p: _reject("the token has expired"))
    jwt.revoked_token_loader(lambda h, p: _reject("the token has been revoked"))
    jwt.invalid_token_loader(lambda reason: _reject(f"invalid token: {reason}"))
    jwt.unauthorized_loader(lambda reason: _reject(reason))
    jwt.needs_fresh_token_loader(lambda h, p: _reject("a fresh token is required"))
    jwt.token_verification_failed_loader(lambda h, p: _reject("the token was refused"))
    return jwt


def authenticate_request() -> None:
    """Set `g.principal` from the bearer token, if any; a bad token is a 401 on every route."""
    g.principal = None
    header = request.headers.get("Authorization", "")
    if not header:
        return
    if not header.startswith("Bearer "):
        raise Unauthorized("use `Authorization: Bearer <token>`")
    refresh = request.path == "/auth/refresh"
    try:
        verify_jwt_in_request(refresh=refresh)
    except (JWTExtendedException, PyJWTError) as err:
        raise Unauthorized(f"invalid token: {err}",
                           headers={"WWW-Authenticate": 'Bearer realm="canopy", error="invalid_token"'})
    from flask_jwt_extended import current_user
    if get_jwt().get("type") == "refresh" and not refresh:
        raise Unauthorized("a refresh token cannot be used for this request; use it at /auth/refresh")
    g.principal = current_user


def issue_tokens(user_id: int, epoch: int, sid: str | None = None) -> dict:
    sid = sid or uuid.uuid4().hex
    claims = {"sid": sid, "epoch": epoch}
    return {"access_token": create_access_token(identity=str(user_id), additional_claims=claims),
            "refresh_token": create_refresh_token(identity=str(user_id), additional_claims=claims),
            "token_type": "Bearer"}


def revoke_session(app: Flask, settings: Settings, sid: str) -> None:
    app.extensions["canopy_blocklist"].set(_BLOCK_PREFIX + sid, "1",
                                           ex=int(timedelta(days=settings.refresh_token_days).total_seconds()))
