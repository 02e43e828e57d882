"""Concurrent byte flows: threads joined by bounded queues, with one shared abort.

This is the plumbing under the pipeline (backup) and the vault (restore, verify): each stage runs
in its own thread so that reading, compressing, encrypting, hashing and writing overlap on
separate cores (zstd, hashlib, zlib and file I/O all release the GIL), and every queue is bounded
so memory stays flat however large the stream is. The first error anywhere aborts every stage.

Waiting stages sleep until they are woken (by their peer, or by the abort), never on a timer: a
many-database backup holds hundreds of stage threads that wait their turn, and a tenth-of-a-second
poll in each cost more CPU than their pg_dumps' compression.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

QUEUE_DEPTH = 4
"""Chunks a queue holds; with 1 MiB chunks, a few MiB per stage is the whole memory budget."""

_POLL = 0.1
_EOF = object()


_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt() parameter number
_arenas_limited = False


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at a few, once per process (unless ``MALLOC_ARENA_MAX`` is set).

    glibc gives each new thread that allocates its own arena (up to 8 per core) and keeps the
    freed 1 MiB chunks of each one for reuse: a many-database backup's hundreds of stage
    threads held 125 MB peak RSS that way, 69 MB with two arenas. Stages spend their time in
    zstd, hashlib and I/O with the GIL released, not in malloc, so fewer arenas cost no speed.
    """
    global _arenas_limited
    if _arenas_limited or not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    _arenas_limited = True
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no arenas)
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, _ARENAS)


class Aborted(Exception):
    """Raised inside a stage when another stage failed; never reaches the user."""


class Flow:
    """A set of stage threads that succeed together or fail with the first error."""

    def __init__(self) -> None:
        limit_malloc_arenas()
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._channels: list[Channel] = []

    @property
    def aborted(self) -> bool:
        """Whether any stage failed (or :meth:`abort` was called)."""
        return self._abort.is_set()

    @property
    def error(self) -> BaseException | None:
        """The first error raised by a stage, if any."""
        return self._error

    def abort(self, error: BaseException | None = None) -> None:
        """Stop every stage; ``error`` is kept if it is the first."""
        with self._lock:
            if error is not None and self._error is None and not isinstance(error, Aborted):
                self._error = error
            channels = list(self._channels)
        self._abort.set()
        for channel in channels:  # after the flag: a woken stage sees it and gives up
            channel.wake()

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        """Run ``target`` in a stage thread; an exception from it aborts the flow."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.abort(exc)

        thread = threading.Thread(target=run, name=f"pgvault-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def wait(self, on_abort: Callable[[], None] | None = None) -> None:
        """Wait for every stage; on the first failure call ``on_abort`` once, then keep waiting.

        ``on_abort`` unblocks stages that wait on something outside the flow (a child process's
        pipe, say). Returns normally only if no stage failed; otherwise raises the first error.
        """
        called = False
        for thread in self._threads:
            while thread.is_alive():
                thread.join(_POLL)
                if self.aborted and not called and on_abort is not None:
                    called = True
                    on_abort()
        if self.aborted and not called and on_abort is not None:
            on_abort()
        if self._error is not None:
            raise self._error
        if self.aborted:
            raise Aborted("flow aborted")

    def channel(self) -> Channel:
        """A bounded queue between two stages of this flow."""
        channel = Channel(self)
        with self._lock:
            self._channels.append(channel)
        if self.aborted:  # an abort that came before this channel existed never wakes it
            channel.wake()
        return channel


class Channel:
    """A bounded queue between one producing and one consuming stage; put and get give up
    (raise :class:`Aborted`) when the flow aborts.

    Make channels with :meth:`Flow.channel`, which registers them so that an abort wakes their
    waiters: nothing here polls.
    """

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._items: deque[Any] = deque()
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: bytes) -> None:
        """Pass ``item`` on, waiting while the consumer is behind."""
        self._put(item)

    def close(self) -> None:
        """Tell the consumer the stream is complete."""
        self._put(_EOF)

    def wake(self) -> None:
        """Wake whoever waits on this channel, to look at the flow's abort flag."""
        with self._ready:
            self._ready.notify_all()

    def _put(self, item: Any) -> None:
        with self._ready:
            while len(self._items) >= QUEUE_DEPTH and not self._flow.aborted:
                self._ready.wait()
            if self._flow.aborted:
                raise Aborted
            self._items.append(item)
            self._ready.notify()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with self._ready:
                while not self._items and not self._flow.aborted:
                    self._ready.wait()
                if self._flow.aborted:
                    raise Aborted
                item = self._items.popleft()
                self._ready.notify()
            if item is _EOF:
                return
            yield item


def feed(chunks: Iterable[bytes], out: Channel, count: Callable[[int], None] | None = None) -> None:
    """Copy ``chunks`` into ``out`` and close it; ``count`` sees each chunk's size."""
    for chunk in chunks:
        if chunk:
            if count is not None:
                count(len(chunk))
            out.put(chunk)
    out.close()


def through(codec: Any, inp: Channel, out: Channel) -> None:
    """Run a :class:`~pgvault.transforms.api.Codec` over a stream, from ``inp`` to ``out``.

    A codec with ``update_chunks`` (decompressors) hands on each bounded piece as soon as it is
    made, so one highly compressed chunk never becomes one huge buffer.
    """
    update_chunks = getattr(codec, "update_chunks", None)
    for chunk in inp:
        if update_chunks is not None:
            for piece in update_chunks(chunk):
                out.put(piece)
            continue
        result = codec.update(chunk)
        if result:
            out.put(result)
    tail = codec.finish()
    if tail:
        out.put(tail)
    out.close()
