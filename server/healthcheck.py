"""`python -m server healthcheck [auto|web|worker]`: a container's health, by its role.

One image runs every role, so its one `HEALTHCHECK` must mean something for each:
- web: the server answers `GET /healthz` on this machine;
- worker: the Huey consumer's supervising loop has touched its heartbeat file lately
  (it does every second, after checking that its worker processes and the reaper are
  alive and replacing any that died), so a wedged or dead consumer turns unhealthy;
- one-shot commands (migrate, secret, create-admin, demo): nothing to check, healthy.
`auto` finds the role from the processes this container runs (its own PID namespace).
Kubernetes probes name the role instead of guessing it.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

HEARTBEAT_FILE = "worker-heartbeat"
STALE_SECONDS = 30.0


def heartbeat_path(run_dir: Path) -> Path:
    return Path(run_dir) / HEARTBEAT_FILE


def beat(path: Path) -> None:
    """Record that the worker's consumer is alive now (the file's modification time)."""
    try:
        path.touch()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def worker_alive(path: Path, stale: float = STALE_SECONDS) -> tuple[bool, str]:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"no heartbeat yet ({path})"
    return age <= stale, f"heartbeat {age:.1f} s ago (stale after {stale:.0f} s)"


def web_alive(port: int, timeout: float = 4.0) -> tuple[bool, str]:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200, f"{url}: {resp.status}"
    except Exception as err:           # refused, timed out, 5xx: all mean "not healthy"
        return False, f"{url}: {type(err).__name__}: {err}"


def roles_running(proc: Path = Path("/proc")) -> set[str]:
    """The long-running roles among this namespace's processes: 'web' (gunicorn serving
    server.asgi, or `server serve`/`dev`) and 'worker' (`server worker`)."""
    roles: set[str] = set()
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        roles |= role_of([a.decode(errors="replace") for a in args if a])
    return roles


def role_of(argv: list[str]) -> set[str]:
    if "server.asgi:app" in argv:
        return {"web"}
    for i, arg in enumerate(argv[:-2]):
        if arg == "-m" and argv[i + 1] == "server":
            command = argv[i + 2]
            return {"serve": {"web"}, "dev": {"web", "worker"}, "worker": {"worker"}}.get(command, set())
    return set()


def check(role: str, run_dir: Path, port: int, stale: float = STALE_SECONDS) -> tuple[bool, list[str]]:
    roles = roles_running() if role == "auto" else {role}
    if not roles:
        return True, ["no web server or worker in this container: nothing to check"]
    results = []
    for name in sorted(roles):
        ok, why = web_alive(port) if name == "web" else worker_alive(heartbeat_path(run_dir), stale)
        results.append((ok, f"{name}: {'ok' if ok else 'UNHEALTHY'}: {why}"))
    return all(ok for ok, _ in results), [msg for _, msg in results]


def main(role: str, stale: float) -> int:
    from .settings import get_settings
    settings = get_settings()
    ok, messages = check(role, settings.run_dir, settings.port, stale)
    for message in messages:
        print(message)
    return 0 if ok else 1
