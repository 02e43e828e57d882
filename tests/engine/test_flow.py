"""Stage threads and channels: a failure anywhere stops stages blocked on a full or empty queue."""

from __future__ import annotations

import threading

import pytest

from pgvault.engine.flow import Aborted, Flow, feed


def _wait_in_thread(flow: Flow) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            flow.wait()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, errors


def test_a_failing_stage_wakes_stages_blocked_on_a_full_and_on_an_empty_channel() -> None:
    """Nothing polls: the abort itself must wake both waiters, and wait() raises the real error."""
    flow = Flow()
    full, empty = flow.channel(), flow.channel()
    flow.spawn("producer", lambda: feed(iter([b"x"] * 1000), full))  # nobody reads: blocks
    flow.spawn("consumer", lambda: list(empty))  # nobody writes: blocks
    started = threading.Event()

    def fail() -> None:
        started.wait()
        raise OSError("disk gone")

    flow.spawn("failing", fail)
    started.set()
    thread, errors = _wait_in_thread(flow)
    thread.join(10)
    assert not thread.is_alive(), "a stage stayed blocked after the flow aborted"
    assert [str(e) for e in errors] == ["disk gone"]


def test_a_channel_made_after_the_abort_gives_up_at_once() -> None:
    """A stage started late (a many-database dump whose turn comes after a failure) never waits."""
    flow = Flow()
    flow.abort(OSError("first"))
    channel = flow.channel()
    with pytest.raises(Aborted):
        channel.put(b"late")
    with pytest.raises(Aborted):
        next(iter(channel))


def test_chunks_pass_in_order_through_a_bounded_channel() -> None:
    """Many more chunks than the queue holds arrive whole and in order."""
    flow = Flow()
    channel = flow.channel()
    chunks = [str(i).encode() for i in range(500)]
    got: list[bytes] = []
    flow.spawn("feed", lambda: feed(iter(chunks), channel))
    flow.spawn("read", lambda: got.extend(channel))
    flow.wait()
    assert got == chunks
