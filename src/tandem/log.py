"""Operator-facing log lines: one line per notable event, with a stable event name first.

A line reads ``EVENT_NAME key=value key=value``; the names are documented in the docs and
never change meaning. :class:`RateLimit` keeps busy paths (per-ACK lines, malformed
datagrams) from flooding the log: past a threshold per window they are counted instead and a
summary line is written when the window closes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

LOGGER_NAME = "tandem"

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def setup_logging(level: int | str = logging.INFO) -> None:
    """Send Tandem's log to stderr at ``level`` unless logging is configured already."""
    root = logging.getLogger()
    logger = logging.getLogger(LOGGER_NAME)
    if root.handlers or logger.handlers:
        return  # configured already (e.g. by the CLI with --log-level): leave it alone
    logger.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False


def fmt_fields(fields: dict[str, object]) -> str:
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or " " in text or "=" in text:
            text = repr(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def event(logger: logging.Logger, level: int, name: str, **fields: object) -> None:
    """Log one event line: ``NAME key=value ...`` (skipped cheaply when the level is off)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s %s", name, fmt_fields(fields) if fields else "")


class RateLimit:
    """At most ``limit`` events per ``window_s``; the rest are counted for a summary.

    ``allow(now)`` says whether this occurrence may be logged individually. When a window in
    which something was suppressed closes, ``on_summary(suppressed, total, window_s)`` is
    called (from ``allow`` or from :meth:`flush`, which the owner calls periodically).
    ``now`` is a monotonic time (e.g. ``loop.time()``).
    """

    __slots__ = ("_count", "_on_summary", "_start", "_suppressed", "limit", "window_s")

    def __init__(
        self,
        limit: int,
        window_s: float,
        on_summary: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._on_summary = on_summary
        self._start = float("-inf")
        self._count = 0
        self._suppressed = 0

    @property
    def suppressing(self) -> bool:
        return self._suppressed > 0

    def allow(self, now: float) -> bool:
        if now - self._start >= self.window_s:
            self.flush(now)
            self._start = now
            self._count = 0
        self._count += 1
        if self._count <= self.limit:
            return True
        self._suppressed += 1
        return False

    def flush(self, now: float) -> None:
        """Report a closed window that suppressed something (no-op otherwise)."""
        if self._suppressed and now - self._start >= self.window_s:
            suppressed, total = self._suppressed, self._count
            self._suppressed = 0
            self._count = 0
            self._start = now
            if self._on_summary is not None:
                self._on_summary(suppressed, total, self.window_s)
