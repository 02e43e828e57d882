"""Many databases of one server in one backup, each its own part, at most ``jobs`` at a time.

The pipeline reads every stream concurrently, so the streams of a many-database run are handed
over at once, but each database's dump starts only when its turn comes: a stream waits until
fewer than ``jobs`` dumps are running and every database before it in the run's order (largest
first, so the long ones do not start last) has started. A dump's connection and its snapshot are
held only while it runs, so a server with a hundred databases sees at most ``jobs`` sessions.

What one database's run is (a pg_dump of it, in its own exported snapshot) is the caller's: this
module only schedules runs, names their streams and gathers their metadata as ``parts``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pgvault.exceptions import SourceError
from pgvault.sources.api import SourceRun, SourceStream, part_prefix
from pgvault.sources.set import now_utc


class ManyDatabasesRun(SourceRun):
    """Runs of several databases, scheduled ``jobs`` at a time, plus one shared run (the
    cluster's globals) whose streams belong to no part.

    ``names`` are the databases in manifest order; ``order`` the order they start in.
    ``start_one(name)`` starts one database's run, which has exactly one stream, called
    ``stream_name``. ``metadata`` is the run's own (server version, the choice of databases).
    """

    def __init__(
        self,
        names: Sequence[str],
        order: Sequence[str],
        start_one: Callable[[str], SourceRun],
        stream_name: str,
        jobs: int,
        shared: SourceRun | None,
        metadata: Mapping[str, Any],
    ) -> None:
        self._names = list(names)
        self._rank = {name: i for i, name in enumerate(order)}
        self._start_one = start_one
        self._jobs = jobs
        self._shared = shared
        self._metadata = dict(metadata)
        self._turn = threading.Condition()
        self._next = 0
        self._running = 0
        self._stopped = False
        self._active: dict[str, SourceRun] = {}
        self._parts: dict[str, dict[str, Any]] = {}
        self._streams: list[SourceStream] = list(shared.streams) if shared else []
        taken = {s.name.split(".", 1)[0].lower() for s in self._streams}
        for name in self._names:
            self._streams.append(
                SourceStream(
                    name=part_prefix(name, taken) + stream_name,
                    chunks=self._dump(name),
                    role="main",
                    part=name,
                )
            )

    def _wait_turn(self, name: str) -> None:
        rank = self._rank[name]
        with self._turn:
            while not (self._next == rank and self._running < self._jobs):
                if self._stopped:
                    raise SourceError("many-database dump stopped")
                self._turn.wait()  # _done() and stop() notify: no poll
            self._next += 1
            self._running += 1
            self._turn.notify_all()

    def _done(self, name: str) -> None:
        with self._turn:
            self._running -= 1
            self._active.pop(name, None)
            self._turn.notify_all()

    def _dump(self, name: str) -> Iterator[bytes]:
        self._wait_turn(name)
        try:
            started = now_utc()
            run = self._start_one(name)
            with self._turn:
                self._active[name] = run
                stopped = self._stopped
            try:
                if stopped:  # stop() came while this run was starting: it missed this one
                    raise SourceError("many-database dump stopped")
                (stream,) = run.streams
                yield from stream.chunks
                record: dict[str, Any] = {"name": name, "type": "pg_dump", **run.metadata()}
                record.update(started_at=started, finished_at=now_utc())
                self._parts[name] = record
            finally:
                run.stop()
        finally:
            self._done(name)

    @property
    def streams(self) -> Sequence[SourceStream]:
        return self._streams

    def metadata(self) -> dict[str, Any]:
        missing = [n for n in self._names if n not in self._parts]
        if missing:  # the pipeline drains every stream first; this would be a broken promise
            raise SourceError(f"databases not dumped: {', '.join(missing)}")
        shared = self._shared.metadata() if self._shared else {}
        return {**self._metadata, **shared, "parts": [self._parts[n] for n in self._names]}

    def stop(self) -> None:
        with self._turn:
            self._stopped = True
            active = list(self._active.values())
            self._turn.notify_all()
        for run in active:
            run.stop()
        if self._shared is not None:
            self._shared.stop()
