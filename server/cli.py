"""`python -m server …`: dev (what `make run` runs), serve, worker, migrate, secret, create-user,
create-admin, demo, healthcheck."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from .settings import ROOT
from .supervisor import Supervised, supervise


def _migrate(args=None) -> None:
    """Apply pending migrations, waiting up to --wait seconds for the database to accept
    connections (a container deployment's first start); with --create-admin, then make
    the first admin (ensure_admin)."""
    from db.migrate import migrate
    wait = getattr(args, "wait", 0) or 0
    applied = migrate(os.environ["DATABASE_URL"], wait=wait, log=lambda m: print(f"migrate: {m}", flush=True))
    print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}", flush=True)
    if getattr(args, "create_admin", False):
        ensure_admin(verbose=True)


def create_user(username: str, password: str | None, role: str = "viewer") -> tuple[int, bool]:
    """Create `username` (argon2 hash) unless it exists; return (id, created)."""
    import psycopg
    from argon2 import PasswordHasher

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT id FROM users WHERE username = %s", (username,)).fetchone()
        if row:
            return row[0], False
        digest = PasswordHasher().hash(password) if password else None
        row = conn.execute("INSERT INTO users (username, password_hash, role) VALUES (%s, %s, %s) "
                           "RETURNING id", (username, digest, role)).fetchone()
        return row[0], True


def _create_user(args) -> None:
    password = args.password or os.environ.get("CANOPY_NEW_PASSWORD")
    if not password:
        import getpass
        password = getpass.getpass(f"password for {args.username}: ")
    user_id, created = create_user(args.username, password, args.role)
    print(f"user {args.username} {'created' if created else 'already exists'} (id {user_id})")


def ensure_admin(verbose: bool = False) -> None:
    """The first admin: CANOPY_ADMIN_USER / CANOPY_ADMIN_PASSWORD (or the file
    CANOPY_ADMIN_PASSWORD_FILE names: a container secret), or a generated password printed
    once (when the account is created). An existing account is left as it is."""
    from .settings import _secret
    username = os.environ.get("CANOPY_ADMIN_USER") or "admin"
    password = _secret("CANOPY_ADMIN_PASSWORD")
    generated = not password
    password = password or secrets.token_urlsafe(16)
    _, created = create_user(username, password, "admin")
    if created and generated:
        print(f"\n  Admin account created: user '{username}', password '{password}'"
              "\n  (shown once; set CANOPY_ADMIN_PASSWORD to choose it)\n", flush=True)
    elif verbose:
        print(f"admin account '{username}' " + ("created with the password CANOPY_ADMIN_PASSWORD gives"
                                                 if created else "exists: left unchanged"), flush=True)


def _create_admin(_args=None) -> None:
    ensure_admin(verbose=True)


def _healthcheck(args) -> None:
    from .healthcheck import main as check
    sys.exit(check(args.role, args.stale))


def ensure_secret_file(path: Path) -> bool:
    """Write a random JWT signing secret to `path` (readable by its owner only) unless the
    file exists, so that restarts keep the tokens they issued valid; True when it was made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return True


def _secret(_args=None) -> None:
    """Check a given CANOPY_JWT_SECRET, or else make the secret file (compose's first step)."""
    from .settings import check_jwt_secret
    if os.environ.get("CANOPY_JWT_SECRET"):
        try:
            check_jwt_secret(os.environ["CANOPY_JWT_SECRET"])
        except RuntimeError as err:
            sys.exit(str(err))
        print("JWT signing secret taken from CANOPY_JWT_SECRET")
        return
    path = os.environ.get("CANOPY_JWT_SECRET_FILE")
    if not path:
        sys.exit("set CANOPY_JWT_SECRET_FILE to where the secret is to be kept")
    made = ensure_secret_file(Path(path))
    print(f"JWT signing secret {'created in' if made else 'kept from'} {path}")


def _demo(args=None) -> None:
    """Load the demo project and plots, make sure its scan has its file and queue the
    next demo job (a worker runs it); with --wait, follow the jobs until the end."""
    from . import demo
    from .settings import get_settings
    print(demo.load_demo(os.environ["DATABASE_URL"]), flush=True)
    settings = get_settings()
    if getattr(args, "wait", False):
        sys.exit(0 if demo.follow(settings, log=lambda m: print(m, flush=True)) else 1)
    step = demo.next_job(settings, demo.ensure_scan(settings, log=lambda m: print(m, flush=True)))
    print("demo: complete" if step is None else f"demo: {step[1]} job {step[0]} queued or running")


def _follow_demo(started: float, public_url: str, stopping) -> threading.Thread:
    """Complete the demo in the background while the server already serves."""
    from . import demo
    from .settings import get_settings

    def run() -> None:
        try:
            ok = demo.follow(get_settings(), log=lambda m: print(m, flush=True), stop=stopping)
        except Exception as err:          # the server keeps serving; the next start resumes the demo
            print(f"demo: not completed ({type(err).__name__}: {err}); `make run` resumes it", flush=True)
            return
        if ok:
            print(f"demo: ready {time.monotonic() - started:.0f} s after start — open {public_url}/viewer",
                  flush=True)

    thread = threading.Thread(target=run, name="demo", daemon=True)
    thread.start()
    return thread


def _gunicorn_cmd(host: str, port: int, workers: int) -> list[str]:
    """gunicorn with an asyncio loop per worker (server/webworker.py): event streams hold
    no thread; the Flask app runs on WEB_THREADS threads per worker (server/asgi.py)."""
    return [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"{host}:{port}",
            "--worker-class", "server.webworker.WebWorker",
            "--graceful-timeout", "30", "--timeout", "120", "server.asgi:app"]


def _worker(args) -> None:
    """Run the Huey consumer that executes jobs (DATABASE_URL and REDIS_URL set)."""
    from .logs import configure
    from .settings import get_settings
    configure(get_settings().log_level)
    from .jobs.worker import run
    run(args.workers)


def _serve(args) -> None:
    """Run the web app under gunicorn in the foreground (DATABASE_URL and REDIS_URL set)."""
    from .metrics import prepare_dir
    from .settings import get_settings
    prepare_dir(get_settings().metrics_dir)     # before gunicorn: its workers count into it
    os.execv(sys.executable, _gunicorn_cmd(args.host, args.port, args.workers))


def _dev(args) -> None:
    """Start private PostGIS and Redis under ./.data (unless DATABASE_URL/REDIS_URL are
    set), migrate, create the admin, load the demo forest and serve until Ctrl-C/SIGTERM."""
    from .devservices import LocalPostgres, LocalRedis

    t0 = time.monotonic()

    def step(message: str) -> None:
        print(f"canopy [{time.monotonic() - t0:5.1f} s] {message}", flush=True)

    data = Path(os.environ.get("CANOPY_DATA_DIR", ROOT / ".data"))
    started = []
    if not os.environ.get("DATABASE_URL"):
        step(f"starting PostgreSQL + PostGIS in {data / 'postgres'}")
        pg = LocalPostgres(data / "postgres")
        os.environ["DATABASE_URL"] = pg.start()
        started.append(pg)
    if not os.environ.get("REDIS_URL"):
        step(f"starting Redis in {data / 'redis'}")
        rd = LocalRedis(data / "redis")
        os.environ["REDIS_URL"] = rd.start()
        started.append(rd)
    if not os.environ.get("CANOPY_JWT_SECRET"):
        os.environ.setdefault("CANOPY_JWT_SECRET_FILE", str(data / "jwt-secret"))
        ensure_secret_file(Path(os.environ["CANOPY_JWT_SECRET_FILE"]))
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    keeper = None
    try:
        step("applying database migrations")
        _migrate()
        ensure_admin()
        from .demo import load_demo
        step(load_demo(os.environ["DATABASE_URL"]))
        host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "5000"))
        step("starting the web server (gunicorn) and a job worker (Huey)")
        from .metrics import prepare_dir
        from .settings import get_settings
        prepare_dir(get_settings().metrics_dir)
        children = [Supervised("web server", _gunicorn_cmd(host, port, args.workers)),
                    Supervised("job worker", [sys.executable, "-m", "server", "worker"])]
        keeper = threading.Thread(target=supervise, args=(children, lambda: stopping), daemon=True)
        keeper.start()          # a dead web server or worker is restarted, never the whole stack stopped
        step(f"Canopy serves at http://{host}:{port}  (Ctrl-C stops everything)")
        _follow_demo(t0, f"http://{host}:{port}", lambda: stopping)
        while not stopping:
            time.sleep(0.3)
    finally:
        stopping = True
        if keeper:
            keeper.join(90)         # SIGTERM to both (their graceful stop), SIGKILL after 40 s
        for service in reversed(started):
            service.stop()
        print("Canopy stopped", flush=True)
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="start services, migrate, load the demo and serve")
    dev.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    dev.set_defaults(func=_dev)
    serve = sub.add_parser("serve", help="serve the web app with gunicorn")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="run the job worker (Huey consumer)")
    worker.add_argument("--workers", type=int, default=int(os.environ.get("CANOPY_WORKERS", "2")))
    worker.set_defaults(func=_worker)
    mig = sub.add_parser("migrate", help="apply pending database migrations")
    mig.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                     help="retry connecting for this long while the database is not ready (containers: 120)")
    mig.add_argument("--create-admin", action="store_true",
                     help="then create the first admin (CANOPY_ADMIN_USER / CANOPY_ADMIN_PASSWORD, or printed once)")
    mig.set_defaults(func=_migrate)
    sub.add_parser("create-admin", help="create the first admin unless it exists (CANOPY_ADMIN_USER, "
                                        "CANOPY_ADMIN_PASSWORD[_FILE]; else a password printed once)"
                   ).set_defaults(func=_create_admin)
    health = sub.add_parser("healthcheck", help="exit 0 when this container's web server / worker is healthy")
    health.add_argument("role", nargs="?", choices=["auto", "web", "worker"], default="auto")
    health.add_argument("--stale", type=float, default=30.0, metavar="SECONDS",
                        help="a worker heartbeat older than this is unhealthy")
    health.set_defaults(func=_healthcheck)
    demo = sub.add_parser("demo", help="load the demo forest and queue its jobs (idempotent)")
    demo.add_argument("--wait", action="store_true", help="follow the demo's jobs until they end (needs a worker)")
    demo.set_defaults(func=_demo)
    sub.add_parser("secret", help="create the JWT signing secret in CANOPY_JWT_SECRET_FILE unless it "
                                  "exists").set_defaults(func=_secret)
    user = sub.add_parser("create-user", help="create a user")
    user.add_argument("username")
    user.add_argument("--role", choices=["admin", "analyst", "viewer"], default="viewer")
    user.add_argument("--password", help="(or CANOPY_NEW_PASSWORD, or asked for)")
    user.set_defaults(func=_create_user)
    args = parser.parse_args(argv)
    args.func(args)
