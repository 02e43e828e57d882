"""The many-database scheduler: ``jobs`` dumps at a time, in the run's order, and a failure
anywhere stops the rest without leaving a connection open."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from pgvault.engine.flow import Flow, feed
from pgvault.exceptions import SourceError
from pgvault.sources.api import SourceRun, SourceStream
from pgvault.sources.databases import ManyDatabasesRun


class _Ledger:
    """What the fake runs did, and the most that ever ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.running = self.max_running = 0


class _FakeRun(SourceRun):
    """One database's run: connected when made, one stream of three chunks."""

    def __init__(self, ledger: _Ledger, name: str, fail: str | None) -> None:
        self._ledger, self._name, self._fail = ledger, name, fail
        self._stopped = False
        with ledger.lock:
            ledger.started.append(name)
            ledger.running += 1
            ledger.max_running = max(ledger.max_running, ledger.running)
        if fail == f"connect {name}":
            self.stop()
            raise SourceError(f"database {name}: cannot connect")

    def _chunks(self) -> Iterator[bytes]:
        for _ in range(3):
            yield self._name.encode()
        if self._fail == f"dump {self._name}":
            raise SourceError(f"database {self._name}: pg_dump failed")

    @property
    def streams(self) -> Sequence[SourceStream]:
        return [SourceStream("dump.pgdump", self._chunks())]

    def metadata(self) -> dict[str, Any]:
        return {"database": self._name}

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with self._ledger.lock:
            self._ledger.stopped.append(self._name)
            self._ledger.running -= 1


def _backup(names: list[str], jobs: int, fail: str | None = None) -> tuple[_Ledger, Any]:
    """Read every stream concurrently, as the pipeline does; return the ledger and the error."""
    ledger = _Ledger()
    run = ManyDatabasesRun(
        names,
        list(reversed(names)),
        lambda name: _FakeRun(ledger, name, fail),
        "dump.pgdump",
        jobs,
        None,
        {"databases": names},
    )
    flow = Flow()
    for stream in run.streams:
        out = flow.channel()
        flow.spawn(f"read-{stream.name}", lambda s=stream, o=out: feed(s.chunks, o))
        flow.spawn(f"store-{stream.name}", lambda o=out: list(o))
    try:
        flow.wait(on_abort=run.stop)
    except SourceError as exc:
        return ledger, exc
    return ledger, run.metadata()


def test_jobs_dumps_at_a_time_in_the_run_order() -> None:
    """Never more than ``jobs`` runs (each a connection and a pg_dump) at once; started in the
    run's order; every run stopped; every database a part of the metadata, in manifest order."""
    names = [f"db{i:02d}" for i in range(30)]
    ledger, metadata = _backup(names, jobs=3)
    assert ledger.max_running <= 3
    assert ledger.started == list(reversed(names))
    assert sorted(ledger.stopped) == names and ledger.running == 0
    assert [p["name"] for p in metadata["parts"]] == names


@pytest.mark.parametrize("fail", ["connect db05", "dump db05"])
def test_a_failing_database_stops_the_others_and_closes_every_connection(fail: str) -> None:
    """The first failure is the error the backup reports, and no connection is left open."""
    names = [f"db{i:02d}" for i in range(12)]
    ledger, error = _backup(names, jobs=2, fail=fail)
    assert isinstance(error, SourceError) and "db05" in str(error)
    assert ledger.running == 0
    assert "db00" not in ledger.started  # last in the run's order: never reached
