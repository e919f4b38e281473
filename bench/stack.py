"""What the benchmarks share: a private PostgreSQL + Redis in a throw-away directory,
Canopy under gunicorn on them, and a signed-up user."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.devservices import LocalPostgres, LocalRedis, free_port  # noqa: E402


@dataclass
class Stack:
    work: Path
    db: str
    redis: str
    postgres_server: LocalPostgres      # to stop and start them under load (bench/faults.py)
    redis_server: LocalRedis


@contextlib.contextmanager
def private_stack(prefix: str) -> Iterator[Stack]:
    """Migrated PostgreSQL + Redis of its own, removed afterwards."""
    (ROOT / ".data").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT / ".data"))
    work.chmod(0o755)                   # the postgres system user must reach its data directory
    pg, rd = LocalPostgres(work / "pg"), LocalRedis(work / "redis", persist=False)
    try:
        db, redis_url = pg.start(), rd.start()
        from db.migrate import migrate
        migrate(db)
        yield Stack(work, db, redis_url, pg, rd)
    finally:
        rd.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def add_user(db: str, username: str, password: str, role: str = "analyst") -> int:
    from argon2 import PasswordHasher
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute("INSERT INTO users (username, password_hash, role) VALUES (%s, %s, %s) RETURNING id",
                            (username, PasswordHasher().hash(password), role)).fetchone()[0]


def status_of(base: str, path: str) -> int:
    parsed = urlparse(base)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def wait_until_up(base: str, path: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {base} exited")
        try:
            if status_of(base, path) == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{base} did not come up")


JWT_SECRET = secrets.token_urlsafe(48)   # one per run: the server refuses secrets written in the repository


def service_env(stack: Stack) -> dict:
    return dict(os.environ, DATABASE_URL=stack.db, REDIS_URL=stack.redis, CANOPY_DATA_DIR=str(stack.work),
                CANOPY_RUN_DIR=str(stack.work / "canopy-run"), CANOPY_LOG_LEVEL="WARNING",
                CANOPY_JWT_SECRET=JWT_SECRET)


@contextlib.contextmanager
def canopy(stack: Stack, workers: int = 2) -> Iterator[tuple[subprocess.Popen, str]]:
    """Canopy's web app under gunicorn (`workers` processes) on the stack; (process, base URL)."""
    port = free_port()
    env = dict(service_env(stack), PORT=str(port), HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--workers", str(workers)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, "/healthz", proc)
        yield proc, base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
