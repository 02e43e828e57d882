"""Fan-out: one backup's stored bytes written to every destination at once.

The pipeline streams a backup once (one pg_dump, one pass through the transforms) and hands each
stored chunk to a :class:`FanoutWriter`, which writes it to one writer per destination. The
rules (docs/storage.md):

* every artifact is committed on every destination still in the run before the ``MD5SUMS``
  and the manifest are written anywhere, so no destination ever shows a manifest whose
  artifacts are not all there;
* a destination that fails (open, write, commit, or the index objects) leaves the run. If it is
  ``required`` the backup fails, naming it, and what was stored anywhere is removed; if not, the
  backup goes on without it, its partial objects are removed (or left for prune when it cannot
  be reached), a warning names it, and it *lags* until ``pgvault copy`` brings it up to date;
* at least one destination must hold the backup, whatever ``required`` says.

Chunks go to the destinations one after the other from the artifact's store thread: memory
stays one chunk per artifact, and the slowest destination sets the pace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import attrs

from pgvault.exceptions import DestinationError, PgVaultError
from pgvault.sinks.api import ObjectWriter
from pgvault.sinks.destinations import Destination

log = logging.getLogger("pgvault.pipeline")


@attrs.frozen
class DestinationFailure:
    """A destination that left a run, and why."""

    destination: Destination
    error: str


class Fanout:
    """The destinations of one run: which are still in it, which failed."""

    def __init__(self, destinations: Sequence[Destination], backup_id: str) -> None:
        self.backup_id = backup_id
        self.all = tuple(destinations)
        self._live = list(destinations)
        self.failing: set[str] = set()
        """Names of every destination that failed in this run, required or not."""
        self._failed: list[DestinationFailure] = []
        self._lock = threading.Lock()

    @property
    def live(self) -> tuple[Destination, ...]:
        """Destinations still in the run."""
        with self._lock:
            return tuple(self._live)

    @property
    def failed(self) -> tuple[DestinationFailure, ...]:
        """Non-required destinations that left the run (a required one raises instead)."""
        with self._lock:
            return tuple(self._failed)

    def is_live(self, dest: Destination) -> bool:
        """Whether ``dest`` is still in the run."""
        with self._lock:
            return dest in self._live

    def fail(self, dest: Destination, exc: BaseException, doing: str) -> None:
        """``dest`` failed while ``doing``: raise if the backup cannot count without it, else
        drop it from the run with a warning."""
        if not isinstance(exc, PgVaultError):
            raise exc  # a bug or an interrupt: not a destination's failure
        text = str(exc).replace("\n", " ")
        # The sink's own message begins with its location.
        where = f"destination {dest.name!r} failed while {doing}: {text}"
        with self._lock:
            if dest not in self._live:
                return
            self._live.remove(dest)
            self.failing.add(dest.name)
            if not dest.required:
                self._failed.append(DestinationFailure(dest, text))
            alone = not self._live
        if dest.required:
            raise DestinationError(
                f"{where}; it is required, so backup {self.backup_id} does not count",
                destination=dest.name,
            ) from exc
        if alone:
            raise DestinationError(
                f"{where}; no destination is left to hold backup {self.backup_id}",
                destination=dest.name,
            ) from exc
        log.warning(
            "%s; it is not required: backup %s goes on without it, and it lags until "
            "`pgvault copy CONFIG --to %s`",
            where,
            self.backup_id,
            dest.name,
        )

    def each(self, doing: str, action: Callable[[Destination], None]) -> None:
        """Do ``action`` on every live destination, in order; a failure is handled by
        :meth:`fail`."""
        for dest in self.live:
            try:
                action(dest)
            except BaseException as exc:
                self.fail(dest, exc, doing)

    def open_writer(self, key: str) -> FanoutWriter:
        """A writer of ``key`` on every live destination."""
        writers: dict[str, tuple[Destination, ObjectWriter]] = {}

        def open_one(dest: Destination) -> None:
            writers[dest.name] = (dest, dest.sink.open_writer(key))

        self.each(f"opening {key}", open_one)
        return FanoutWriter(self, key, writers)

    def write_index(self, key: str, data: bytes) -> None:
        """Store index object ``key`` (``MD5SUMS``, the manifest) on every live destination."""
        self.each(f"writing {key}", lambda dest: dest.sink.write_bytes(key, data))


class FanoutWriter(ObjectWriter):
    """Writes one object to several destinations; a destination that fails leaves the run."""

    def __init__(
        self, fanout: Fanout, key: str, writers: dict[str, tuple[Destination, ObjectWriter]]
    ) -> None:
        self._fanout = fanout
        self._key = key
        self._writers = writers

    def _current(self) -> list[tuple[Destination, ObjectWriter]]:
        """Writers of destinations still in the run; those of the others are aborted."""
        current = []
        for name, (dest, writer) in list(self._writers.items()):
            if self._fanout.is_live(dest):
                current.append((dest, writer))
            else:
                del self._writers[name]
                _quietly_abort(writer)
        return current

    def _each(self, doing: str, action: Callable[[ObjectWriter], None]) -> None:
        for dest, writer in self._current():
            try:
                action(writer)
            except BaseException as exc:
                _quietly_abort(writer)
                self._writers.pop(dest.name, None)
                self._fanout.fail(dest, exc, f"{doing} {self._key}")

    def write(self, data: bytes) -> None:
        self._each("writing", lambda writer: writer.write(data))

    def seal(self) -> None:
        self._each("writing", lambda writer: writer.seal())

    def commit(self) -> None:
        self._each("committing", lambda writer: writer.commit())

    def abort(self) -> None:
        for _, writer in self._writers.values():
            _quietly_abort(writer)


def _quietly_abort(writer: ObjectWriter) -> None:
    try:
        writer.abort()
    except PgVaultError as exc:  # the destination is failing anyway: prune cleans up later
        log.debug("could not abort a write: %s", exc)


def remove_stored(fanout_or_dests: Fanout | Sequence[Destination], prefix: str) -> None:
    """Remove what a run stored under ``prefix`` (one backup's folder) from each destination,
    the manifest first; what cannot be removed is left for prune, and said so (quietly for a
    destination already reported failing: a list of destinations counts as such)."""
    if isinstance(fanout_or_dests, Fanout):
        dests, failing = fanout_or_dests.all, fanout_or_dests.failing
    else:
        dests, failing = tuple(fanout_or_dests), {d.name for d in fanout_or_dests}
    for dest in dests:
        sink = dest.sink
        try:
            keys = sorted(
                (info.key for info in sink.list(prefix)),
                key=lambda k: not k.endswith("/manifest.json"),
            )
            for key in keys:
                sink.delete(key)
            # A writer the interruption caught before it could be aborted leaves its
            # temporary object: it goes too.
            for name in sink.list_partials(prefix):
                sink.delete_partial(name)
        except PgVaultError as exc:
            log.log(
                logging.INFO if dest.name in failing else logging.WARNING,
                "could not remove leftovers under %s at destination %s: %s (prune removes them)",
                prefix,
                dest.describe(),
                exc,
            )
