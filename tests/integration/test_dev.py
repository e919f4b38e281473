"""`python -m server dev` (what `make run` runs) keeps its stack up: a killed job worker
or web server is restarted with a log line, and only SIGTERM stops everything."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _wait_for(log: Path, pattern: str, after: int = 0, timeout: float = 120) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(re.finditer(pattern, log.read_text()))
        if len(found) > after:
            return found[after]
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in the log after {timeout} s:\n{log.read_text()[-3000:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_dev_restarts_a_killed_worker_and_web_server_and_stops_on_sigterm():
    from server.devservices import free_port

    data = ROOT / ".data" / f"test-dev-{os.getpid()}"
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o755)                  # the postgres system user must reach its data directory
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CANOPY_JWT_SECRET")}
    env.update(CANOPY_DATA_DIR=str(data), PORT=str(port), HOST="127.0.0.1", CANOPY_WORKER_GRACE="2",
               CANOPY_ADMIN_PASSWORD="dev test password 1")
    log = data / "dev.log"
    with open(log, "w") as fh:
        dev = subprocess.Popen([sys.executable, "-m", "server", "dev", "--workers", "1"], cwd=ROOT, env=env,
                               stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        worker = int(_wait_for(log, r"job worker started \(pid (\d+)\)")[1])
        web = int(_wait_for(log, r"web server started \(pid (\d+)\)")[1])
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        os.killpg(worker, signal.SIGKILL) if os.getpgid(worker) == worker else os.kill(worker, signal.SIGKILL)
        _wait_for(log, rf"job worker \(pid {worker}\) exited with signal 9; restarting")
        worker2 = int(_wait_for(log, r"job worker started \(pid (\d+)\)", after=1)[1])
        assert worker2 != worker and _alive(worker2) and dev.poll() is None
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200   # the web server was untouched

        os.kill(web, signal.SIGKILL)
        _wait_for(log, rf"web server \(pid {web}\) exited with signal 9; restarting")
        web2 = int(_wait_for(log, r"web server started \(pid (\d+)\)", after=1)[1])
        assert web2 != web and dev.poll() is None
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and status != 200:
            try:
                status = requests.get(f"{base}/healthz", timeout=2).status_code
            except requests.RequestException:
                time.sleep(0.3)
        assert status == 200 and _alive(worker2)

        dev.send_signal(signal.SIGTERM)
        assert dev.wait(120) == 0
        assert "Canopy stopped" in log.read_text()
        assert not _alive(worker2) and not _alive(web2)
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)
