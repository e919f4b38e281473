"""Private PostgreSQL+PostGIS and Redis servers for `make run` and the test suite.

Nothing on a fresh Debian machine starts services by itself (no systemd), and
PostgreSQL refuses to run as root, so this module starts a cluster of its own in a
directory it owns (as the `postgres` system user when we are root) and a Redis
beside it, each on a free loopback port. It is only used when `DATABASE_URL` /
`REDIS_URL` are not set. pytest-postgresql cannot run the server as another user,
hence this small hand-written module.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1]
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL is not installed: run scripts/bootstrap.sh")


def _as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses root: run its tools as the `postgres` system user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster under `root`, listening on 127.0.0.1 only (trust auth)."""

    root: Path
    port: int = field(default_factory=free_port)
    dbname: str = "canopy"

    @property
    def datadir(self) -> Path:
        return self.root / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def start(self) -> str:
        bin_ = _pg_bin()
        self.root.mkdir(parents=True, exist_ok=True)
        self._chown(self.root)
        if not (self.datadir / "PG_VERSION").exists():
            self.datadir.mkdir(exist_ok=True)
            self._chown(self.datadir)
            subprocess.run(_as_pg_user([str(bin_ / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                                        "-A", "trust", "-E", "UTF8", "--no-sync"]),
                           check=True, stdout=subprocess.DEVNULL)
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            # A cluster left running by an earlier run: reuse it (its port is in the pid file).
            lines = pidfile.read_text().splitlines()
            if len(lines) > 3 and _port_open(int(lines[3])):
                self.port = int(lines[3])
                self._ensure_database()
                return self.url
        log = self.root / "postgres.log"
        log.touch()
        self._chown(log)
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=256MB")
        subprocess.run(_as_pg_user([str(bin_ / "pg_ctl"), "-D", str(self.datadir), "-l", str(log),
                                    "-o", opts, "-w", "-t", "60", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        self._ensure_database()
        return self.url

    def _ensure_database(self) -> None:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.dbname}"')
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(_as_pg_user([str(_pg_bin() / "pg_ctl"), "-D", str(self.datadir),
                                        "-m", "fast", "-w", "stop"]),
                           check=False, stdout=subprocess.DEVNULL)


@dataclass
class LocalRedis:
    """A Redis server under `root` on 127.0.0.1 (append-only file when `persist`)."""

    root: Path
    port: int = field(default_factory=free_port)
    persist: bool = True
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed: run scripts/bootstrap.sh")
        self.root.mkdir(parents=True, exist_ok=True)
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--save", "", "--appendonly", "yes" if self.persist else "no",
                "--logfile", str(self.root / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.root / 'redis.log'}")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
