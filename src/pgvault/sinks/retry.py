"""Retrying remote operations: exponential backoff with jitter, bounded by attempts and time.

Remote sinks meet two kinds of failure. *Transient* ones (a reset connection, a 5xx answer,
throttling) usually go away, so the operation is tried again after a growing, randomised pause;
*permanent* ones (403, no such bucket, bad credentials) never do, so they fail at once and the
user hears which it was. Which is which is the sink's call: it passes a classifier.

The policy owns every retry: sinks turn their client libraries' own retry loops off, so that
``attempts`` and ``max_seconds`` mean what they say rather than multiplying with a hidden loop.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import attrs

log = logging.getLogger("pgvault.sinks.retry")

T = TypeVar("T")


class GaveUpError(Exception):
    """A transient failure outlasted the policy; ``last`` is the final error."""

    def __init__(self, last: BaseException, attempts: int, elapsed: float) -> None:
        super().__init__(f"gave up after {attempts} attempts in {elapsed:.1f}s: {last}")
        self.last = last
        self.attempts = attempts
        self.elapsed = elapsed


@attrs.frozen
class RetryPolicy:
    """How often and how long to retry a transient failure.

    The pause before retry *n* (1-based) is drawn uniformly from the upper half of
    ``min(max_delay, base_delay * 2**(n-1))`` ("equal jitter"): it grows exponentially, never
    synchronises clients that failed together, and never drops to zero. No retry starts once
    ``max_seconds`` would be exceeded by its pause.
    """

    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    """Tries in all, the first included."""
    max_seconds: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    """Time budget from the first try; no new try starts after it."""
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, retry: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """The pause before retry number ``retry`` (1 for the first retry)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return rng(cap / 2, cap)

    def call(
        self,
        fn: Callable[[], T],
        *,
        transient: Callable[[BaseException], bool],
        what: str = "operation",
        on_retry: Callable[[BaseException], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        """Run ``fn`` until it succeeds, a permanent error occurs, or the budget runs out.

        A permanent error (``transient(exc)`` false) propagates unchanged on first sight; an
        exhausted budget raises :class:`GaveUpError` carrying the last transient error. ``on_retry``
        runs before each new try (a sink drops a broken connection there).
        """
        start = clock()
        tries = 0
        while True:
            tries += 1
            try:
                return fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                elapsed = clock() - start
                if tries >= self.attempts:
                    raise GaveUpError(exc, tries, elapsed) from exc
                pause = self.delay(tries)
                if elapsed + pause > self.max_seconds:
                    raise GaveUpError(exc, tries, elapsed) from exc
                log.warning(
                    "%s failed (attempt %d of %d), retrying in %.1fs: %s",
                    what,
                    tries,
                    self.attempts,
                    pause,
                    _one_line(exc),
                )
                sleep(pause)
                if on_retry is not None:
                    on_retry(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
