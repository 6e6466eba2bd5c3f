"""Progress of ``stanchion import-filestore``, one channel at a time.

On a terminal a single line is redrawn (a bar, messages and bytes, rates);
otherwise a plain line is written every ``interval`` seconds and when a
channel is done, so logs of unattended runs stay readable.
"""

from __future__ import annotations

import time
from typing import TextIO

#: Seconds between redraws of the bar.
REDRAW = 0.1
#: Seconds between plain lines.
LINE_INTERVAL = 5.0
BAR_WIDTH = 24


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def human_rate(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.2f}M"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return f"{n:.0f}"


class Progress:
    """``begin(what, channel, total_msgs, total_bytes)``, ``add(msgs, bytes)``
    any number of times, then ``end()``. ``mode``: ``bar``, ``lines`` or ``off``."""

    def __init__(self, stream: TextIO, mode: str, interval: float = LINE_INTERVAL) -> None:
        self.stream = stream
        self.mode = mode
        self.interval = interval
        self._what = ""
        self._channel = ""
        self._total_msgs = 0
        self._total_bytes = 0
        self._msgs = 0
        self._bytes = 0
        self._start = 0.0
        self._last_draw = 0.0

    def begin(self, what: str, channel: str, total_msgs: int, total_bytes: int) -> None:
        self._what = what
        self._channel = channel
        self._total_msgs = total_msgs
        self._total_bytes = total_bytes
        self._msgs = self._bytes = 0
        self._start = self._last_draw = time.monotonic()
        if self.mode == "bar":
            self._draw()

    def add(self, msgs: int, nbytes: int) -> None:
        self._msgs += msgs
        self._bytes += nbytes
        now = time.monotonic()
        if self.mode == "bar" and now - self._last_draw >= REDRAW:
            self._last_draw = now
            self._draw()
        elif self.mode == "lines" and now - self._last_draw >= self.interval:
            self._last_draw = now
            self._line()

    def end(self) -> float:
        """Finish the channel's line; returns the seconds it took."""
        elapsed = time.monotonic() - self._start
        if self.mode == "bar":
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        elif self.mode == "lines":
            self._line(done=True)
        return elapsed

    # -- rendering ------------------------------------------------------------------

    def _rates(self) -> tuple[float, float]:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        return self._msgs / elapsed, self._bytes / elapsed

    def _fraction(self) -> float:
        if self._total_bytes > 0:
            return min(self._bytes / self._total_bytes, 1.0)
        if self._total_msgs > 0:
            return min(self._msgs / self._total_msgs, 1.0)
        return 1.0

    def _count(self) -> str:
        if self._total_msgs:
            return f"{self._msgs}/{self._total_msgs} msgs"
        return f"{self._msgs} msgs"

    def _draw(self) -> None:
        frac = self._fraction()
        filled = int(frac * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        mps, bps = self._rates()
        text = (
            f"{self._what} {self._channel} [{bar}] {frac * 100:5.1f}% "
            f"{self._count()} {human_bytes(self._bytes)} "
            f"{human_rate(mps)} msg/s {human_bytes(bps)}/s"
        )
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()

    def _line(self, done: bool = False) -> None:
        mps, bps = self._rates()
        state = "done" if done else f"{self._fraction() * 100:.1f}%"
        self.stream.write(
            f"{self._what} {self._channel}: {state}, {self._count()}, "
            f"{human_bytes(self._bytes)}, {human_rate(mps)} msg/s, {human_bytes(bps)}/s\n"
        )
        self.stream.flush()
