"""The dev stack's supervisor (`python -m server dev`, what `make run` runs): keeps the
web server and the job worker running, restarting either when it dies, so that killing
one (or a crash) never stops the whole stack; only Ctrl-C/SIGTERM stops everything.

A process that dies soon after each start is restarted with a growing pause (1 s
doubling to 30 s), so a broken one does not spin the machine."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field

QUICK_DEATH_S = 10.0
MAX_PAUSE_S = 30.0


def log(message: str) -> None:
    print(f"canopy dev: {message}", flush=True)


@dataclass
class Supervised:
    name: str
    cmd: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    pause: float = 0.0
    due: float = 0.0               # when a pending restart is to happen (0: none pending)
    restarts: int = field(default=0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd)
        self.started, self.due = time.monotonic(), 0.0
        log(f"{self.name} started (pid {self.proc.pid})")

    def check(self) -> None:
        """Restart the process if it has died (after its pause)."""
        now = time.monotonic()
        if self.due:
            if now >= self.due:
                self.restarts += 1
                self.start()
            return
        if self.proc is None or self.proc.poll() is None:
            return
        quick = now - self.started < QUICK_DEATH_S
        self.pause = min(MAX_PAUSE_S, max(1.0, self.pause * 2)) if quick else 0.0
        how = (f"signal {-self.proc.returncode}" if self.proc.returncode < 0 else f"code {self.proc.returncode}")
        log(f"{self.name} (pid {self.proc.pid}) exited with {how}; restarting"
            + (f" in {self.pause:.0f} s" if self.pause else ""))
        self.due = now + self.pause if self.pause else now
        if not self.pause:
            self.restarts += 1
            self.start()

    def stop(self, timeout: float = 40) -> None:
        """SIGTERM (the graceful stop of gunicorn and of the worker), then SIGKILL."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def supervise(children: list[Supervised], stopping) -> None:
    """Start `children` and keep them running until `stopping()` is true; then stop them."""
    try:
        for child in children:
            child.start()
        while not stopping():
            for child in children:
                child.check()
            time.sleep(0.3)
    finally:
        for child in children:
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in children:
            child.stop()

