"""The parallel restore of a single custom-format archive, loaded while it is still decoded.

``pg_restore --jobs`` needs a seekable file, and a vault gives a stream: the archive is decoded
into a work file. Waiting for the whole file before loading anything leaves pg_restore idle for
the decode, so instead one thread writes the file and says how far it has got, and pg_restore
runs in three steps that follow it:

* ``--section=pre-data`` as soon as the header and TOC are written, fed through a pipe;
* then ``jobs`` processes of ``--section=data``, each with a ``--use-list`` of a share of the
  archive's data, each fed the growing file from its start through its own pipe. Reading a pipe,
  pg_restore cannot go back, so each list keeps the archive's order, and it skips the blocks of
  entries its list leaves out (checked against pg_restore 15: ``_PrintTocData`` reads block
  headers on until it finds the one it wants);
* as each share but the last is loaded, ``--section=post-data`` of the indexes and keys that
  need only its tables (:class:`EarlyPostData`), fed like the pre-data, while the other shares
  still load: ``pg_restore --jobs`` from a file likewise builds an index once its table is in;
* once the file is whole, ``--section=post-data --jobs`` from the file for the rest: indexes
  and constraints read no data, so the data offsets pg_dump could not write to its pipe are
  not needed.

Shares are dealt by the sizes the backup recorded for each table (``bytes``, else ``rows``), so
that one dominant table gets a process to itself while the others take the rest.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from pgvault.exceptions import IntegrityError, PgVaultError, RestoreError, TransformError
from pgvault.operations.restore.selection import SESSION
from pgvault.postgres.archive import ArchiveToc, TocEntry
from pgvault.postgres.client import _Collector, child_env, exit_description, widen_pipe

log = logging.getLogger("pgvault.restore")

_FEED_STEP = 8 << 20
"""At most this many bytes per ``sendfile``: a feeder that is told to stop does so soon."""


def data_shares(
    toc: ArchiveToc,
    selected: frozenset[int] | None,
    weights: Mapping[tuple[str, str], int],
    jobs: int,
) -> list[list[TocEntry]]:
    """Deal the archive's entries (those in ``selected``, or all) into at most ``jobs`` lists for
    ``pg_restore --section=data``, each in the archive's order.

    Every entry that has a data block goes to exactly one list, the heaviest first to the
    lightest list (``weights`` by ``(schema, table)``; an entry without a figure weighs the
    average of those with one). A list whose own data is small against the data of others it
    would have to read past (see :data:`_SKIP_COST`) joins the lightest other list: the tables
    of a database with one dominant table all go to one pg_restore. Entries without data
    (``SEQUENCE SET`` …; pg_restore leaves the other sections' out itself) go to the first list
    only, so each runs once.
    """
    entries = [e for e in toc.entries if selected is None or e.dump_id in selected]
    blocks = [e for e in entries if e.has_data]
    known = [weights[(e.namespace, e.tag)] for e in blocks if (e.namespace, e.tag) in weights]
    default = max(1, sum(known) // len(known)) if known else 1

    def weight(e: TocEntry) -> int:
        return max(1, weights.get((e.namespace, e.tag), default))

    jobs = max(1, min(jobs, len(blocks)))
    loads = [0] * jobs
    owner: dict[int, int] = {}
    # Longest first to the least loaded; ties keep the archive's order (stable sort).
    for e in sorted(blocks, key=weight, reverse=True):
        k = loads.index(min(loads))
        owner[e.dump_id] = k
        loads[k] += weight(e)
    while (small := _not_worth_it(blocks, owner, weight, loads)) is not None:
        into = min((j for j in range(jobs) if j != small and loads[j]), key=loads.__getitem__)
        for e in blocks:
            if owner[e.dump_id] == small:
                owner[e.dump_id] = into
        loads[into], loads[small] = loads[into] + loads[small], 0
    kept = [k for k in range(jobs) if loads[k]] or [0]
    shares: dict[int, list[TocEntry]] = {k: [] for k in kept}
    for e in entries:
        if e.has_data:
            shares[owner[e.dump_id]].append(e)
        elif e.desc in SESSION:
            for share in shares.values():
                share.append(e)
        else:
            shares[kept[0]].append(e)
    return list(shares.values())


_SKIP_COST = 0.1
"""What reading past a byte of another list's data costs a pg_restore, against loading a byte of
its own (skipping 340 MB from a pipe measured 0.4 s, loading them 5 to 8 s: 0.05 to 0.08)."""


def _not_worth_it(
    blocks: Sequence[TocEntry],
    owner: Mapping[int, int],
    weight: Callable[[TocEntry], int],
    loads: Sequence[int],
) -> int | None:
    """A list (of several) whose load is below what it skips times :data:`_SKIP_COST`."""
    if sum(1 for load in loads if load) < 2:
        return None
    last = {owner[e.dump_id]: i for i, e in enumerate(blocks)}
    for k, end in last.items():
        skipped = sum(weight(e) for e in blocks[:end] if owner[e.dump_id] != k)
        if loads[k] < _SKIP_COST * skipped:
            return k
    return None


def table_weights(source: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """Each dumped table's size as a backup's manifest records it (``source["tables"]``): its
    ``bytes`` where recorded, else its ``rows`` (manifests before ``bytes``)."""
    out: dict[tuple[str, str], int] = {}
    for t in source.get("tables", []):
        figure = t.get("bytes", t.get("rows"))
        if figure is not None and int(figure) >= 0:
            out[(str(t["schema"]), str(t["name"]))] = int(figure)
    return out


_EARLY_KINDS = frozenset({"INDEX", "CONSTRAINT"})
"""Post-data entries that may run while other shares load: an index, or a primary key, unique
or exclusion constraint (``FK CONSTRAINT`` is another kind), each on one table."""

_PRE_DATA_KINDS = frozenset(
    {
        "ACCESS METHOD",
        "AGGREGATE",
        "CAST",
        "COLLATION",
        "CONVERSION",
        "DEFAULT",
        "DOMAIN",
        "EXTENSION",
        "FUNCTION",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "PROCEDURE",
        "SCHEMA",
        "SEQUENCE",
        "SHELL TYPE",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "TYPE",
    }
)
"""Kinds restored by the pre-data, done before any share starts: an early entry may need them."""


class EarlyPostData:
    """Which post-data entries may run once some shares are loaded, the others still loading.

    An entry qualifies when it is an index or a non-foreign key (:data:`_EARLY_KINDS`), is
    selected, needs at least one table, and everything it depends on is restored: every table
    it needs has data and all of that data is in finished shares (a partitioned table, which has
    none, and a table whose data is not restored, leave it to the final pass), and its other
    dependencies are pre-data objects (:data:`_PRE_DATA_KINDS`) or are not in the archive (as
    pg_restore, which ignores those). A dependency on anything else (another index: a partition
    index's ``INDEX ATTACH``, a foreign key's referenced key) leaves it to the final pass, where
    pg_restore orders the rest itself. Materialized view data, ACLs, triggers and rules never run
    early. No entry is given out twice; :attr:`started` is what the final pass must leave out.
    """

    def __init__(
        self,
        toc: ArchiveToc,
        selected: frozenset[int] | None,
        shares: Sequence[Sequence[TocEntry]],
    ) -> None:
        self._toc = toc
        self._selected = selected
        self._count = len(shares)
        self._finished: set[int] = set()
        self.started: set[int] = set()
        by_id = {e.dump_id: e for e in toc.entries}
        self._by_id = by_id
        self._share_of = {
            e.dump_id: k for k, share in enumerate(shares) for e in share if e.has_data
        }
        self._data_of: dict[int, list[int]] = {}
        for e in toc.entries:
            if e.desc == "TABLE DATA":
                for d in e.dependencies:
                    if d in by_id and by_id[d].desc == "TABLE":
                        self._data_of.setdefault(d, []).append(e.dump_id)

    def after(self, share: int) -> list[TocEntry]:
        """Share ``share`` is loaded: the entries that may run now, in the archive's order; none
        once every share is (the final pass then runs them several at a time)."""
        self._finished.add(share)
        if len(self._finished) >= self._count:
            return []
        ready = [e for e in self._toc.entries if self._ready(e)]
        self.started.update(e.dump_id for e in ready)
        return ready

    def _ready(self, e: TocEntry) -> bool:
        if e.desc not in _EARLY_KINDS or e.dump_id in self.started:
            return False
        if self._selected is not None and e.dump_id not in self._selected:
            return False
        tables = 0
        for d in e.dependencies:
            dep = self._by_id.get(d)
            if dep is None:
                continue
            if dep.desc == "TABLE":
                blocks = self._data_of.get(d, [])
                if not blocks or any(self._share_of.get(b) not in self._finished for b in blocks):
                    return False
                tables += 1
            elif dep.desc not in _PRE_DATA_KINDS:
                return False
        return tables > 0


class _Growing:
    """A work file that one thread writes while others follow what is written."""

    def __init__(self, path: Path) -> None:
        self._cond = threading.Condition()
        self._size = 0
        self._done = False
        self._stopped = False
        self.error: BaseException | None = None
        self.written = 0
        self.wrote_at = 0.0
        """When the last byte was written (``time.perf_counter``)."""
        self._fd = os.open(path, os.O_RDONLY)

    def write(
        self, chunks: Iterator[bytes], handle: IO[bytes], on_failure: Callable[[], None]
    ) -> None:
        """Write ``chunks`` to ``handle``, publishing each as it is flushed (a thread's body)."""
        size = 0
        try:
            for chunk in chunks:
                if self._stopped:
                    break
                try:
                    handle.write(chunk)
                    handle.flush()
                except OSError as exc:
                    raise RestoreError(f"cannot write the work file {handle.name}: {exc}") from exc
                size += len(chunk)
                with self._cond:
                    self._size = size
                    self._cond.notify_all()
        except BaseException as exc:
            self.error = exc
            on_failure()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a stream stopped early lets go of its source now
            self.written, self.wrote_at = size, time.perf_counter()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def stop(self) -> None:
        """Make the writer and every feeder stop at their next step."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def feed(self, out: int) -> None:
        """Copy the file to pipe ``out`` from its start as it grows, until its end, or until the
        reader closes the pipe (pg_restore has all it needs) or :meth:`stop`."""
        pos = 0
        while True:
            with self._cond:
                while pos >= self._size and not self._done and not self._stopped:
                    self._cond.wait()
                end, done = self._size, self._done
                if self._stopped or (done and self.error is not None):
                    return  # the process is being killed: no truncated input to misread
            if pos >= end and done:
                return
            try:
                while pos < end:
                    pos += _send(out, self._fd, pos, min(end - pos, _FEED_STEP))
            except BrokenPipeError:
                return

    def close(self) -> None:
        os.close(self._fd)


def _send(out: int, fd: int, pos: int, count: int) -> int:
    try:
        return os.sendfile(out, fd, pos, count)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
    data = os.pread(fd, count, pos)  # a kernel whose sendfile cannot write to a pipe
    return os.write(out, data)


class _Tools:
    """The pg_restore processes of one restore, so that any of them can be stopped at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = child_env(env)
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._feeders: list[threading.Thread] = []
        self._killed = False
        self.stopped_by_stream = False
        """Whether the stream's failure stopped them (and not one of theirs)."""

    def kill(self) -> None:
        """Kill every process started, and start no more."""
        with self._lock:
            self._killed = True
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()

    def stream_failed(self) -> None:
        """The writer's word that the stream failed: stop everything."""
        with self._lock:
            if not self._killed:
                self.stopped_by_stream = True
        self.kill()

    def join(self) -> None:
        """Wait for every feeder (each ends once its process has)."""
        for t in self._feeders:
            t.join()

    def run(
        self,
        argvs: Sequence[list[str]],
        growing: _Growing,
        after: Callable[[int], list[str] | None] | None = None,
    ) -> None:
        """Run each of ``argvs`` at once, each fed the growing file; on the first failure kill
        the others and raise it. Once ``argvs[i]`` has succeeded, ``after(i)`` may give one more
        argv to run beside those still going (it is waited for too)."""
        done: queue.Queue[tuple[int, int, str]] = queue.Queue()
        threads: list[threading.Thread] = []

        def start(index: int, argv: list[str]) -> bool:
            with self._lock:
                if self._killed:
                    return False
                try:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        env=self._env,
                        bufsize=0,
                    )
                except OSError as exc:
                    raise RestoreError(f"cannot run {argv[0]}: {exc.strerror}") from None
                self._procs.append(proc)
            t = threading.Thread(
                target=self._serve,
                args=(index, proc, growing, done),
                daemon=True,
                name="pgvault-feed",
            )
            t.start()
            self._feeders.append(t)
            threads.append(t)
            return True

        running = 0
        for i, argv in enumerate(argvs):
            if not start(i, argv):
                break
            running += 1
        failure: RestoreError | None = None
        began = time.perf_counter()
        extra = len(argvs)
        while running:
            index, rc, err = done.get()
            running -= 1
            log.debug("a pg_restore ended (%d) after %.2f s", rc, time.perf_counter() - began)
            if rc != 0 and failure is None:
                failure = RestoreError(exit_description(argvs[0][0], rc, err))
                self.kill()
            elif rc == 0 and failure is None and after is not None and index < len(argvs):
                more = after(index)
                if more is not None and start(extra, more):
                    running += 1
                    extra += 1
        for t in threads:
            t.join()
        if failure is not None:
            raise failure
        if self._killed:
            raise RestoreError("pg_restore was stopped")  # replaced by the reason by the caller

    @staticmethod
    def _serve(
        index: int,
        proc: subprocess.Popen[bytes],
        growing: _Growing,
        done: queue.Queue[tuple[int, int, str]],
    ) -> None:
        assert proc.stdin is not None
        widen_pipe(proc.stdin.fileno())
        err = _Collector(proc.stderr)  # its tail, read as it comes (a chatty tool can't block)
        try:
            with contextlib.suppress(BrokenPipeError):
                growing.feed(proc.stdin.fileno())
        except OSError:
            proc.kill()  # the work file itself failed: the restore stops
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            rc = proc.wait()
            done.put((index, rc, err.text()))


def restore_overlapped(
    pre: list[str],
    data: Sequence[list[str]],
    chunks: Iterator[bytes],
    handle: IO[bytes],
    path: Path,
    env: dict[str, str],
    after: Callable[[int], list[str] | None] | None = None,
) -> None:
    """Decode ``chunks`` into the work file ``handle`` (at ``path``) while ``pre`` (pg_restore's
    pre-data argv) and then every ``data`` argv read it as it grows; return once the file is
    whole (and closed) and the data loaded: the post-data reads the file itself. Once
    ``data[i]`` is loaded, ``after(i)`` may give an argv to run beside the others (the early
    post-data, :class:`EarlyPostData`).

    A failure of the stream (a damaged artifact) kills the pg_restores and is raised as is; a
    failure of pg_restore kills the others, then the rest of the stream is still read, so that
    damage that made pg_restore fail first is reported as damage.
    """
    growing = _Growing(path)
    tools = _Tools(env)
    writer = threading.Thread(
        target=growing.write,
        args=(chunks, handle, tools.stream_failed),
        daemon=True,
        name="pgvault-work",
    )
    writer.start()
    start = time.perf_counter()
    try:
        try:
            tools.run([pre], growing)
            log.debug("%s: pre-data restored at %.2f s", path, time.perf_counter() - start)
            tools.run(data, growing, after)
            log.debug("%s: data loaded at %.2f s", path, time.perf_counter() - start)
        except RestoreError as failure:
            writer.join()  # to the end of the stream, where its digests are checked
            damage = growing.error
            # As raise_if_damaged: damage found in the rest is the news; storage lost while
            # reading it proves nothing, unless its failure is what stopped pg_restore.
            if damage is not None and (
                tools.stopped_by_stream
                or isinstance(damage, (IntegrityError, TransformError))
                or not isinstance(damage, PgVaultError)
            ):
                raise damage from failure
            raise
        writer.join()
        if growing.error is not None:
            raise growing.error
        log.debug(
            "%s: written, %d bytes, at %.2f s", path, growing.written, growing.wrote_at - start
        )
    except BaseException:
        tools.kill()
        growing.stop()
        writer.join()
        tools.join()
        raise
    finally:
        growing.close()
    handle.close()
