"""The retry policy: transient errors retried with growing jittered pauses, bounded; others not."""

from __future__ import annotations

import pytest

from pgvault.sinks.retry import GaveUpError, RetryPolicy, chain


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


class TransientError(Exception):
    pass


class PermanentError(Exception):
    pass


def flaky(failures: int, exc: type[Exception] = TransientError):
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise exc(f"failure {calls['n']}")
        return "done"

    return fn, calls


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


def test_transient_errors_are_retried_until_success() -> None:
    """Two transient failures, then success: the result comes back after two pauses."""
    clock = Clock()
    fn, calls = flaky(2)
    policy = RetryPolicy(attempts=5, max_seconds=100)
    assert policy.call(fn, transient=is_transient, sleep=clock.sleep, clock=clock) == "done"
    assert calls["n"] == 3
    assert len(clock.sleeps) == 2


def test_pauses_grow_exponentially_with_jitter() -> None:
    """Each pause lies in the upper half of base·2^(n-1), capped, and they are not all equal."""
    policy = RetryPolicy(attempts=10, max_seconds=1000, base_delay=0.5, max_delay=4)
    for retry, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 4.0)]:
        draws = [policy.delay(retry) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in draws)
        assert len(set(draws)) > 1


def test_permanent_error_fails_at_once() -> None:
    """A permanent error propagates unchanged on the first try, with no pause."""
    clock = Clock()
    fn, calls = flaky(5, PermanentError)
    with pytest.raises(PermanentError):
        RetryPolicy().call(fn, transient=is_transient, sleep=clock.sleep, clock=clock)
    assert calls["n"] == 1
    assert clock.sleeps == []


def test_attempts_bound_the_retries() -> None:
    """With attempts = 3, a persistent transient error is tried 3 times, then GaveUpError."""
    clock = Clock()
    fn, calls = flaky(100)
    with pytest.raises(GaveUpError) as info:
        RetryPolicy(attempts=3, max_seconds=1000).call(
            fn, transient=is_transient, sleep=clock.sleep, clock=clock
        )
    assert calls["n"] == 3
    assert info.value.attempts == 3
    assert isinstance(info.value.last, TransientError)


def test_total_time_bounds_the_retries() -> None:
    """No retry starts once its pause would pass max_seconds, whatever attempts allows."""
    clock = Clock()
    fn, calls = flaky(1000)
    policy = RetryPolicy(attempts=1000, max_seconds=10, base_delay=1, max_delay=4)
    with pytest.raises(GaveUpError):
        policy.call(fn, transient=is_transient, sleep=clock.sleep, clock=clock)
    assert clock.now <= 10
    assert calls["n"] < 10


def test_on_retry_runs_before_each_new_try() -> None:
    """on_retry sees each transient error (a sink reconnects there)."""
    clock = Clock()
    fn, _ = flaky(2)
    seen: list[str] = []
    RetryPolicy().call(
        fn,
        transient=is_transient,
        on_retry=lambda e: seen.append(str(e)),
        sleep=clock.sleep,
        clock=clock,
    )
    assert seen == ["failure 1", "failure 2"]


def test_chain_follows_causes() -> None:
    """chain() lists an exception and the ones it was raised from, outermost first."""
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as inner:
            raise OSError("wrapped") from inner
    except OSError as outer:
        found = chain(outer)
    assert [type(e) for e in found] == [OSError, ConnectionResetError]
