"""Progress display on stderr: a live bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import sys
import time


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class ProgressBar:
    """Report `done` out of `total` units; `render(done, elapsed)` formats the text after the bar.

    On a terminal the line is redrawn at most ten times a second; elsewhere (logs, CI, pipes)
    only the final line is printed, so logs stay short.
    """

    def __init__(self, label: str, total: int | None, render, stream=None, enabled=True):
        self.label, self.total, self.render = label, total, render
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self.stream.write("\r" + self._line(done, now - self.start) + "\033[K")
        self.stream.flush()

    def close(self, done: int, suffix: str = "") -> None:
        if not self.enabled:
            return
        line = self._line(done, time.perf_counter() - self.start) + suffix
        self.stream.write(("\r" + line + "\033[K\n") if self.live else line + "\n")
        self.stream.flush()

    def _line(self, done: int, elapsed: float) -> str:
        bar = ""
        if self.total:
            frac = min(done / self.total, 1.0)
            filled = int(frac * 24)
            bar = f" [{'#' * filled}{'.' * (24 - filled)}] {frac:4.0%}"
        return f"{self.label}{bar} {self.render(done, elapsed)}"
