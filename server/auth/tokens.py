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
from typing import NoReturn

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import PyJWTError

from db.access import Principal
from db.pool import get_pool
from providers.schema import parse_id

from ..errors import ServiceUnavailable, Unauthorized
from ..settings import Settings, check_jwt_secret
from . import oidc, pat, policy

AUDIENCE = "canopy"
_BLOCK_PREFIX = "canopy:revoked:"
_SESSION_ONLY = ("/auth/refresh", "/auth/logout", "/auth/password")


def configure(app: Flask, settings: Settings) -> JWTManager:
    check_jwt_secret(settings.jwt_secret)
    app.config.update(
        JWT_SECRET_KEY=settings.jwt_secret,
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256", "RS256"] if settings.oidc_issuer else ["HS256"],
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.access_token_seconds),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings.refresh_token_days),
        JWT_ENCODE_ISSUER=settings.public_url,
        JWT_DECODE_ISSUER=[settings.public_url] + ([settings.oidc_issuer] if settings.oidc_issuer else []),
        JWT_ENCODE_AUDIENCE=AUDIENCE,
        JWT_DECODE_AUDIENCE=[AUDIENCE] + ([settings.oidc_audience] if settings.oidc_audience else []),
        JWT_ERROR_MESSAGE_KEY="detail",
    )
    jwt = JWTManager(app)
    # fails fast when Redis is away (no retries): the request decides what that means (_revoked)
    app.extensions["canopy_blocklist"] = redis.Redis.from_url(
        settings.redis_url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))

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

    return jwt


def _reject(reason: str) -> NoReturn:
    raise Unauthorized(reason, headers={"WWW-Authenticate": 'Bearer realm="canopy", error="invalid_token"'})


_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def _revoked(claims: dict) -> bool:
    """Whether the token's session was logged out. With Redis unreachable this fails
    open for reads and closed for writes (503): a read with a logged-out but otherwise
    valid token (signature, expiry, and the user row checked in PostgreSQL, so disabled
    users and changed passwords still apply) is a smaller harm than every reader locked
    out by a Redis restart; a write that might come from a revoked session waits."""
    sid = claims.get("sid")
    if not sid:
        return False
    try:
        return current_app.extensions["canopy_blocklist"].exists(_BLOCK_PREFIX + sid) == 1
    except redis.RedisError as err:
        if request.method in _READS:
            current_app.logger.warning("token revocation unchecked (Redis unreachable: %s); read allowed",
                                       type(err).__name__)
            return False
        raise ServiceUnavailable("token revocation cannot be checked (Redis is unavailable); "
                                 "retry in a few seconds") from None


def _principal(claims: dict) -> Principal | None:
    """Who the token speaks for, read from the database now (None: disabled, or the
    password changed since the token was issued)."""
    settings = current_app.config["CANOPY_SETTINGS"]
    if settings.oidc_issuer and claims.get("iss") == settings.oidc_issuer:
        return oidc.user_for(settings, claims)
    try:
        user_id = parse_id(str(claims.get("sub")))
    except ValueError:
        _reject("the token's subject is not a user id")
    with get_pool().connection() as conn:
        row = conn.execute("SELECT id, role, active, token_epoch FROM users WHERE id = %s",
                           (user_id,)).fetchone()
    if row is None or not row[2] or row[3] != claims.get("epoch"):
        return None
    return Principal(user_id=row[0], role=row[1])


def authenticate_request() -> None:
    """Set `g.principal` and `g.claims` from the bearer token, if any, on every method;
    a bad token is a 401 on every route. A personal access token (auth.pat) stands for
    its user, narrowed to its project scope and read-only flag.

    The token is decoded here rather than by `verify_jwt_in_request`, which skips OPTIONS
    and leaves nothing to read: OPTIONS answers what the caller may do, so it needs them."""
    g.principal, g.claims = None, {}
    header = request.headers.get("Authorization", "")
    if not header:
        return
    if not header.startswith("Bearer "):
        raise Unauthorized("use `Authorization: Bearer <token>`")
    token = header.removeprefix("Bearer ").strip()
    if pat.is_pat(token):
        if request.path in _SESSION_ONLY:
            _reject("a personal access token cannot refresh, sign out or change a password")
        g.principal, token_id = pat.principal_for(token)
        g.claims = {"pat": token_id, "sub": str(g.principal.user_id)}
        query = request.method == "POST" and request.mimetype in ("application/json", "application/query-cql-json") \
            and request.path.startswith("/collections/") and request.path.rstrip("/").endswith("/items")
        policy.check_token_limits(request.method, read_query=query)
        return
    try:
        claims = decode_token(token)
    except (JWTExtendedException, PyJWTError) as err:
        _reject(f"invalid token: {err}")
    wanted = "refresh" if request.path == "/auth/refresh" else "access"
    if claims.get("type") != wanted:
        _reject("a refresh token is only for /auth/refresh" if wanted == "access"
                else "send the refresh token, not an access token")
    if _revoked(claims):
        _reject("the token has been revoked")
    principal = _principal(claims)
    if principal is None:
        _reject("this token is no longer valid (user disabled or password changed)")
    g.principal, g.claims = principal, claims


def claims() -> dict:
    """The verified claims of the request's token ({} without one)."""
    return g.get("claims", {})


def issue_tokens(user_id: int, epoch: int, sid: str | None = None) -> dict:
    sid = sid or uuid.uuid4().hex
    claims = {"sid": sid, "epoch": epoch}
    return {"access_token": create_access_token(identity=str(user_id), additional_claims=claims),
            "refresh_token": create_refresh_token(identity=str(user_id), additional_claims=claims),
            "token_type": "Bearer"}


def revoke_session(app: Flask, settings: Settings, sid: str) -> None:
    app.extensions["canopy_blocklist"].set(_BLOCK_PREFIX + sid, "1",
                                           ex=int(timedelta(days=settings.refresh_token_days).total_seconds()))
