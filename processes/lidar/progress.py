"""Progress reporting through the ``progress(percent, message)`` callback.

The job system passes a callback and cancels a job by raising from inside it,
so this helper never catches what the callback raises.  It rate-limits calls
(at most one per 0.5 % or 1 s) and maps a sub-task onto a slice of the overall
0-100 range.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

ProgressFn = Callable[[float, str], None]


class Progress:
    """Counts work done against a total and forwards percentages to a callback.

    ``start``/``stop`` map this task's 0-100 % onto a slice of a parent task.
    """

    def __init__(self, callback: ProgressFn | None, total: float = 100.0, label: str = "",
                 start: float = 0.0, stop: float = 100.0) -> None:
        self.callback = callback
        self.total = float(total) or 1.0
        self.label = label
        self.start = start
        self.stop = stop
        self.done_units = 0.0
        self._last_pct = -1.0
        self._last_t = 0.0

    def percent(self) -> float:
        frac = min(self.done_units / self.total, 1.0)
        return self.start + (self.stop - self.start) * frac

    def advance(self, units: float, message: str = "") -> None:
        self.done_units += units
        self._emit(message)

    def set(self, units: float, message: str = "") -> None:
        self.done_units = units
        self._emit(message)

    def _emit(self, message: str, force: bool = False) -> None:
        if self.callback is None:
            return
        pct = self.percent()
        now = time.monotonic()
        if force or pct - self._last_pct >= 0.5 or now - self._last_t >= 1.0:
            self._last_pct, self._last_t = pct, now
            self.callback(round(pct, 2), f"{self.label}: {message}" if self.label and message else message or self.label)

    def done(self, message: str = "done") -> None:
        self.done_units = self.total
        self._emit(message, force=True)

    def slice(self, start_frac: float, stop_frac: float, total: float = 100.0, label: str = "") -> "Progress":
        """A child reporter covering [start_frac, stop_frac] of this one's range."""
        span = self.stop - self.start
        return Progress(self.callback, total, label or self.label,
                        self.start + span * start_frac, self.start + span * stop_frac)


def report(progress: ProgressFn | None, percent: float, message: str) -> None:
    """Call ``progress`` if given (exceptions propagate: that is how jobs are cancelled)."""
    if progress is not None:
        progress(percent, message)


def terminal_bar(stream=sys.stderr) -> ProgressFn:
    """A progress callback drawing a one-line bar on a terminal."""
    last = [""]

    def draw(percent: float, message: str) -> None:
        width = 30
        filled = int(width * percent / 100)
        line = f"\r[{'#' * filled}{'.' * (width - filled)}] {percent:5.1f}% {message[:60]:<60}"
        if line != last[0]:
            stream.write(line)
            stream.flush()
            last[0] = line
        if percent >= 100:
            stream.write("\n")

    return draw
