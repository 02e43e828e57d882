"""Progress on a terminal: bytes and rate on one self-rewriting stderr line.

Shown only when stderr is a terminal, so cron and systemd logs stay quiet. The library itself never
prints: it reports to a :class:`~pgvault.engine.pipeline.Progress`, and the CLI passes this one.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_INTERVAL = 0.2


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class TerminalProgress:
    """A :class:`~pgvault.engine.pipeline.Progress` that redraws one line on a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._raw = 0
        self._stored = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    @staticmethod
    def wanted(stream: TextIO | None = None) -> bool:
        """Whether progress should be shown: only on an interactive terminal."""
        return (stream or sys.stderr).isatty()

    def advance(self, raw: int = 0, stored: int = 0) -> None:
        """Count bytes; redraw at most five times a second."""
        with self._lock:
            self._raw += raw
            self._stored += stored
            now = time.monotonic()
            if now - self._last >= _INTERVAL:
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-6)
        parts = [f"{self._label}: {human_bytes(self._raw)} read"]
        if self._stored:
            parts.append(f"{human_bytes(self._stored)} stored")
        parts.append(f"{human_bytes(self._raw / elapsed)}/s")
        self._stream.write("\r\033[K" + ", ".join(parts))
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the progress line."""
        with self._lock:
            if self._drawn:
                self._stream.write("\r\033[K")
                self._stream.flush()
