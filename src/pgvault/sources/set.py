"""A backup set: several sources (``[[source]]`` tables) backed up together into one backup.

Each member is an ordinary source with a ``name`` (the database, the media folder, the config
folder). The set starts every member, hands all their streams to the pipeline at once (so they
flow concurrently, each through its own stage threads), prefixes each stream with its part's name
(``media.files.tar``) and tags it with its ``part``, and records every member's metadata as one
entry of ``source.parts`` (see :mod:`pgvault.vault.parts`), with the time the member started and
the time its last stream ended beside it. A pg_dump member also records ``snapshot_at``, the
server's clock when the dump's snapshot was taken: together they say how far apart the files and
the database were caught.

If any member fails to start, the ones already started are stopped; if any stream fails, the
pipeline aborts every stream (and the set stops every member): a set is backed up whole or not
at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from pgvault.sources.api import Source, SourceRun, SourceStream, part_prefix

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

SET_TYPE = "set"
"""``source.type`` of a backup set's manifest."""


@attrs.frozen
class Member:
    """One ``[[source]]`` of a set: its part name and its source."""

    name: str
    source: Source


def _members(value: Iterable[Member]) -> tuple[Member, ...]:
    return tuple(value)


def _unique(instance: object, attribute: attrs.Attribute[Any], value: Sequence[Member]) -> None:
    if not value:
        raise ValueError("a backup set needs at least one source")
    names = [m.name for m in value]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two sources are called {name!r}")


@attrs.frozen
class SourceSet(Source):
    """Several named sources backed up concurrently into one backup with one manifest."""

    type_name: ClassVar[str] = SET_TYPE

    members: tuple[Member, ...] = attrs.field(converter=_members, validator=_unique)

    def member(self, name: str) -> Source:
        """The source of part ``name``; KeyError if the set has none."""
        for m in self.members:
            if m.name == name:
                return m.source
        raise KeyError(name)

    def describe(self) -> str:
        return "set of " + ", ".join(f"{m.name} ({m.source.describe()})" for m in self.members)

    def start(self) -> SourceRun:
        return self._start(lambda source: source.start())

    def start_for(self, pipeline: PipelineConfig) -> SourceRun:
        return self._start(lambda source: source.start_for(pipeline))

    def _start(self, start: Callable[[Source], SourceRun]) -> SourceRun:
        runs: list[tuple[Member, SourceRun]] = []
        try:
            for m in self.members:
                runs.append((m, start(m.source)))
            return _SetRun(runs)
        except BaseException:
            _stop_all(run for _m, run in runs)
            raise


def now_utc() -> str:
    """The current UTC time as manifests write it (ISO 8601, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _SetRun(SourceRun):
    def __init__(self, runs: list[tuple[Member, SourceRun]]) -> None:
        self._runs = runs
        self._started = now_utc()
        self._lock = threading.Lock()
        self._left: dict[str, int] = {}
        self._finished: dict[str, str] = {}
        self._streams: list[SourceStream] = []
        taken: set[str] = set()
        for member, run in runs:
            name = member.name
            prefix = part_prefix(name, taken)
            self._left[name] = len(run.streams)
            for stream in run.streams:
                if stream.part:
                    raise ValueError(f"source {name!r} has parts of its own; a set cannot hold it")
                self._streams.append(
                    SourceStream(
                        name=prefix + stream.name,
                        chunks=self._tracked(name, stream.chunks),
                        role=stream.role,
                        part=name,
                    )
                )

    def _tracked(self, name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        yield from chunks
        with self._lock:  # the member's last stream ended complete: its files were read
            self._left[name] -= 1
            if self._left[name] == 0:
                self._finished[name] = now_utc()

    @property
    def streams(self) -> Sequence[SourceStream]:
        return self._streams

    def metadata(self) -> dict[str, Any]:
        parts = []
        for member, run in self._runs:
            record: dict[str, Any] = {"name": member.name, "type": member.source.type_name}
            record.update(run.metadata())
            record["started_at"] = self._started
            record["finished_at"] = self._finished.get(member.name, now_utc())
            parts.append(record)
        return {"parts": parts}

    def stop(self) -> None:
        _stop_all(run for _m, run in self._runs)


def _stop_all(runs: Iterable[SourceRun]) -> None:
    """Stop every run, even when one of them fails to stop; then raise the first failure."""
    first: BaseException | None = None
    for run in runs:
        try:
            run.stop()
        except BaseException as exc:
            first = first or exc
    if first is not None:
        raise first
