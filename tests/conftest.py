"""Real services for the suite: a private PostGIS and Redis (started here, on free
ports, in a throw-away directory) and the real web app under gunicorn.

Set TEST_DATABASE_URL / TEST_REDIS_URL to use servers of your own instead (the
suite creates and drops its own data there; never point them at production).
Fixtures are lazy: the LiDAR unit tests start nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
JWT_SECRET = secrets.token_urlsafe(48)   # the server refuses any secret written in the repository


class Server(str):
    """The base URL of the server under test; `.log` is its log file."""

    log: Path


class User(NamedTuple):
    id: int
    token: str
    username: str


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """(database_url, redis_url) of migrated, empty, real services."""
    from db.migrate import migrate
    from server.devservices import LocalPostgres, LocalRedis

    started = []
    base = ROOT / ".data" / f"test-{os.getpid()}"
    db_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    try:
        if not db_url:
            pg = LocalPostgres(base / "postgres")
            db_url = pg.start()
            started.append(pg)
        if not redis_url:
            rd = LocalRedis(base / "redis", persist=False)
            redis_url = rd.start()
            started.append(rd)
        migrate(db_url)
        yield db_url, redis_url
    finally:
        for service in reversed(started):
            service.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def private_services(name: str, username: str, role: str = "analyst"):
    """(LocalPostgres, LocalRedis, database URL, Redis URL, user id) of a migrated PostgreSQL
    and a Redis of their own, with one user: for tests whose data no other test may see
    (fuzzing) or that stop the services (outages)."""
    from bench.stack import add_user
    from db.migrate import migrate
    from server.devservices import LocalPostgres, LocalRedis

    root = ROOT / ".data" / f"test-{name}-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    pg, rd = LocalPostgres(root / "pg"), LocalRedis(root / "redis", persist=False)
    try:
        db, redis_url = pg.start(), rd.start()
        migrate(db)
        yield pg, rd, db, redis_url, add_user(db, username, PASSWORD, role)
    finally:
        rd.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def token_of(base: str, username: str) -> str:
    return requests.post(f"{base}/auth/token", json={"username": username, "password": PASSWORD},
                         timeout=30).json()["access_token"]


@pytest.fixture(scope="session")
def db_url(services):
    return services[0]


@pytest.fixture()
def db(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not answer {url}:\n{log.read_text()[-4000:]}")


def _service_env(services, run_dir: Path, **extra_env: str) -> dict:
    """The environment of a server or worker; `extra_env` adds to it or overrides it."""
    db_url, redis_url = services
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, CANOPY_RUN_DIR=str(run_dir),
               CANOPY_DATA_DIR=str(run_dir), CANOPY_JWT_SECRET=JWT_SECRET, CANOPY_LOG_LEVEL="INFO")
    env.update(extra_env)
    return env


@contextlib.contextmanager
def running_server(services, run_dir: Path, preexec_fn=None, **extra_env: str):
    """The real app under gunicorn (2 workers) on a free port; yields its base URL
    (`preexec_fn` runs in the server's process before it starts, as for Workers.start)."""
    from server.devservices import free_port

    port = free_port()
    env = _service_env(services, run_dir, HOST="127.0.0.1", PORT=str(port),
                       CANOPY_PROXY_HOPS="1",   # tests pose as different clients with X-Forwarded-For
                       **extra_env)
    log = run_dir / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--workers", "2"],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    base = Server(f"http://127.0.0.1:{port}")
    base.log = log
    try:
        _wait_http(f"{base}/healthz", proc, log, timeout=180)   # a loaded 2-core machine starts slowly
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def server(services, tmp_path_factory):
    """Base URL of the real app (see running_server)."""
    with running_server(services, tmp_path_factory.mktemp("run")) as base:
        yield base


class Workers:
    """Start and stop real job workers (`python -m server worker`) sharing the server's
    database, Redis and storage."""

    def __init__(self, services, run_dir: Path):
        self.services, self.run_dir, self.procs = services, run_dir, []

    def start(self, workers: int = 1, preexec_fn=None, **env: str) -> subprocess.Popen:
        log = open(self.run_dir / f"worker-{len(self.procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "server", "worker", "--workers", str(workers)], cwd=ROOT,
                                env=_service_env(self.services, self.run_dir, **env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec_fn)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal the consumer and, for SIGKILL, every worker process of it too."""
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


@pytest.fixture()
def workers(services, server):
    """Job workers for one test, all stopped at its end (the server's storage is theirs)."""
    w = Workers(services, Path(server.log).parent)
    yield w
    w.stop_all()


@pytest.fixture(scope="session")
def project(services):
    """A public project the Features tests fill."""
    with psycopg.connect(services[0], autocommit=True) as conn:
        return conn.execute("INSERT INTO projects (name, visibility) VALUES ('features tests', 'public') "
                            "RETURNING id").fetchone()[0]


@pytest.fixture(scope="session")
def make_user(services, server):
    """make_user(role, memberships={project_id: role}) -> User(id, token, username); the
    password of every such user is PASSWORD."""
    from argon2 import PasswordHasher
    import itertools
    counter = itertools.count()
    digest = PasswordHasher().hash(PASSWORD)

    def make(role: str = "viewer", memberships: dict | None = None) -> User:
        name = f"user{os.getpid()}-{next(counter)}"
        with psycopg.connect(services[0], autocommit=True) as conn:
            uid = conn.execute("INSERT INTO users (username, password_hash, role) VALUES (%s, %s, %s) "
                               "RETURNING id", (name, digest, role)).fetchone()[0]
            for pid, mrole in (memberships or {}).items():
                conn.execute("INSERT INTO project_members (project_id, user_id, role) VALUES (%s, %s, %s)",
                             (pid, uid, mrole))
        r = requests.post(f"{server}/auth/token", json={"username": name, "password": PASSWORD},
                          headers={"X-Forwarded-For": f"10.1.{uid // 250}.{uid % 250}"})
        assert r.status_code == 200, r.text
        return User(uid, r.json()["access_token"], name)

    return make


@pytest.fixture(scope="session")
def admin_headers(make_user):
    return {"Authorization": f"Bearer {make_user('admin').token}"}
