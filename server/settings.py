"""Every setting Canopy reads, from the environment only, once, typed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _secret(name: str) -> str:
    """`name`, or else the content of the file `{name}_FILE` names (how containers pass secrets)."""
    value, path = os.environ.get(name, ""), os.environ.get(f"{name}_FILE", "")
    if value or not path or not os.path.isfile(path):
        return value
    return Path(path).read_text().strip()


# Secrets written in this repository, now or before (compose file, README, examples):
# public, so never a signing key. tests/integration/test_security.py keeps the list complete.
PUBLISHED_SECRETS = frozenset({"change-me-to-a-long-random-secret"})
MIN_SECRET_BYTES = 32


def check_jwt_secret(secret: str) -> None:
    """Refuse to sign tokens with a secret anyone could know or guess: missing, shorter
    than 32 bytes, published in this repository, or of fewer than 8 distinct characters."""
    hint = "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
    if not secret:
        raise RuntimeError("CANOPY_JWT_SECRET (or the file CANOPY_JWT_SECRET_FILE names) must hold "
                           f"a random secret; `make run` and `docker compose up` make one, or {hint}")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise RuntimeError(f"CANOPY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes of random text, {hint}")
    if secret in PUBLISHED_SECRETS or len(set(secret)) < 8:
        raise RuntimeError(f"CANOPY_JWT_SECRET is a published or guessable value; use a random one, {hint}")


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    public_url: str            # the URL clients reach the server at (used in every link)
    host: str
    port: int
    storage_url: str           # file:///… (default ./.data/storage) or s3://bucket/prefix
    storage_cache: Path        # with S3: local copies of fetched objects (never the objects themselves)
    work_dir: Path             # this machine's scratch: uploads being received, job work directories
    s3_endpoint: str           # an S3-compatible server (http://host:port); empty: AWS
    s3_cache_bytes: int        # fetched S3 objects kept in storage_cache, least recently used evicted
    run_dir: Path              # generated pygeoapi config and OpenAPI document
    jwt_secret: str
    limit_default: int
    limit_max: int
    count_cap: int             # numberMatched is exact up to this many matches, the planner's estimate beyond
    log_level: str
    cors_origins: tuple[str, ...]   # origins allowed everything with credentials; empty: anonymous reads from any
    proxy_hops: int            # reverse proxies in front whose X-Forwarded-* headers are trusted
    access_token_seconds: int  # lifetime of an access token (CANOPY_ACCESS_TOKEN_SECONDS, else _MINUTES x 60)
    refresh_token_days: int
    login_rate: str            # flask-limiter syntax, per client address
    oidc_issuer: str           # empty: external identity disabled
    oidc_audience: str
    oidc_jwks_url: str         # empty: discovered from the issuer's openid-configuration
    oidc_role_claim: str
    callbacks_allow_private: bool  # subscriber URLs may point inside the network (tests, closed networks)
    sync_wait_seconds: float   # how long a synchronous execution waits for its job before answering 201
    metrics_dir: Path = Path(".data/run/prometheus")   # PROMETHEUS_MULTIPROC_DIR of the web workers
    max_body_bytes: int = 16 << 20   # request bodies but tus uploads: 413 beyond (a plot, a filter, inputs)
    web_threads: int = 8       # threads per web worker for the Flask app (event streams take none)
    sse_max_streams: int = 2000    # open event streams per web worker; beyond, 503 (each holds a Redis connection)
    sse_keepalive: float = 15.0    # seconds of quiet before a stream re-reads its job and sends a comment
    basemap_url: str = ""     # XYZ tiles under the maps of pygeoapi's pages; empty: none (works offline)
    job_attempts: int = 3          # runs of a job before a crash or a reaped run fails it
    job_heartbeat: float = 1.0     # seconds between a running job's heartbeats
    job_stale: float = 10.0        # a running job whose heartbeat is older than this is reaped
    reap_every: float = 5.0        # seconds between the worker's looks for stale jobs
    dismiss_grace: float = 3.0     # seconds a dismissed job has to stop before its process is killed
    worker_grace: float = 30.0     # seconds a stopping worker lets running jobs finish
    upload_max_bytes: int = 50 << 30   # one upload's largest length
    upload_quota_bytes: int = 200 << 30  # a user's uploads, unless users.quota_bytes says otherwise
    upload_ttl_hours: float = 24.0     # an unfinished upload untouched this long expires
    fanout_points: int = 20_000_000    # scans with more points run as one child job per tile
    tile_datasets: int = 32            # open raster datasets kept per web worker
    tile_cache_ttl: int = 0            # seconds rendered tiles are kept in Redis; 0: no cache
    db_pool: int = 8                   # pooled database connections per process
    db_pool_timeout: float = 2.0       # seconds a request waits for a pooled connection (then 503)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    host = os.environ.get("HOST", "127.0.0.1")
    port = _int("PORT", 5000)
    data = Path(os.environ.get("CANOPY_DATA_DIR", ROOT / ".data"))
    return Settings(
        database_url=os.environ.get("DATABASE_URL", ""),
        redis_url=os.environ.get("REDIS_URL", ""),
        public_url=os.environ.get("CANOPY_PUBLIC_URL", f"http://{host}:{port}").rstrip("/"),
        host=host,
        port=port,
        storage_url=os.environ.get("CANOPY_STORAGE_URL", (data / "storage").as_uri()),
        storage_cache=Path(os.environ.get("CANOPY_STORAGE_CACHE", data / "storage-cache")),
        work_dir=Path(os.environ.get("CANOPY_WORK_DIR", data / "work")),
        s3_endpoint=os.environ.get("CANOPY_S3_ENDPOINT", ""),
        s3_cache_bytes=_int("CANOPY_S3_CACHE_BYTES", 100 << 30),
        run_dir=Path(os.environ.get("CANOPY_RUN_DIR", data / "run")),
        jwt_secret=_secret("CANOPY_JWT_SECRET"),
        limit_default=_int("CANOPY_LIMIT_DEFAULT", 100),
        limit_max=_int("CANOPY_LIMIT_MAX", 10000),
        count_cap=_int("CANOPY_COUNT_CAP", 10000),
        log_level=os.environ.get("CANOPY_LOG_LEVEL", "INFO").upper(),
        cors_origins=tuple(o for o in os.environ.get("CANOPY_CORS_ORIGINS", "").split(",") if o),
        proxy_hops=_int("CANOPY_PROXY_HOPS", 0),
        access_token_seconds=_int("CANOPY_ACCESS_TOKEN_SECONDS", 60 * _int("CANOPY_ACCESS_TOKEN_MINUTES", 15)),
        refresh_token_days=_int("CANOPY_REFRESH_TOKEN_DAYS", 7),
        login_rate=os.environ.get("CANOPY_LOGIN_RATE", "10 per minute"),
        oidc_issuer=os.environ.get("CANOPY_OIDC_ISSUER", "").rstrip("/"),
        oidc_audience=os.environ.get("CANOPY_OIDC_AUDIENCE", ""),
        oidc_jwks_url=os.environ.get("CANOPY_OIDC_JWKS_URL", ""),
        oidc_role_claim=os.environ.get("CANOPY_OIDC_ROLE_CLAIM", "canopy_role"),
        callbacks_allow_private=os.environ.get("CANOPY_CALLBACKS_ALLOW_PRIVATE", "") in ("1", "true", "yes"),
        sync_wait_seconds=_float("CANOPY_SYNC_WAIT_SECONDS", 30.0),
        metrics_dir=Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR")
                         or Path(os.environ.get("CANOPY_RUN_DIR", data / "run")) / "prometheus"),
        max_body_bytes=_int("CANOPY_MAX_BODY_BYTES", 16 << 20),
        web_threads=_int("WEB_THREADS", 8),
        sse_max_streams=_int("CANOPY_SSE_MAX_STREAMS", 2000),
        sse_keepalive=_float("CANOPY_SSE_KEEPALIVE", 15.0),
        basemap_url=os.environ.get("CANOPY_BASEMAP_URL", ""),
        job_attempts=_int("CANOPY_JOB_ATTEMPTS", 3),
        job_heartbeat=_float("CANOPY_JOB_HEARTBEAT", 1.0),
        job_stale=_float("CANOPY_JOB_STALE", 10.0),
        reap_every=_float("CANOPY_REAP_EVERY", 5.0),
        dismiss_grace=_float("CANOPY_DISMISS_GRACE", 3.0),
        worker_grace=_float("CANOPY_WORKER_GRACE", 30.0),
        upload_max_bytes=_int("CANOPY_UPLOAD_MAX_BYTES", 50 << 30),
        upload_quota_bytes=_int("CANOPY_UPLOAD_QUOTA_BYTES", 200 << 30),
        upload_ttl_hours=_float("CANOPY_UPLOAD_TTL_HOURS", 24.0),
        fanout_points=_int("CANOPY_FANOUT_POINTS", 20_000_000),
        tile_datasets=_int("CANOPY_TILE_DATASETS", 32),
        tile_cache_ttl=_int("CANOPY_TILE_CACHE_TTL", 0),
        db_pool=_int("CANOPY_DB_POOL", 8),
        db_pool_timeout=_float("CANOPY_DB_POOL_TIMEOUT", 2.0),
    )
