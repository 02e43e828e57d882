"""The sink conformance suite: what every sink, pgvault's own and third parties', must pass.

Subclass :class:`SinkConformanceTests` in a test module and provide a ``sink`` fixture returning
your sink, configured against a real server (the fixtures in :mod:`pgvault.testing` start S3, GCS
and SFTP servers; start your own for other backends)::

    import pytest
    from pgvault.testing.conformance import SinkConformanceTests

    class TestMySink(SinkConformanceTests):
        @pytest.fixture
        def sink(self, my_server):
            return MySink(url=my_server.url, part_size_mib=5)

Every test works under its own random key prefix, so the sink may be shared between tests.

Create-if-absent (:meth:`~pgvault.sinks.api.Sink.open_writer_if_absent`) is checked for every
sink: an existing key is never replaced. The race test holds each sink to the guarantee it
declares in ``create_guarantee``: with ``ATOMIC``, of writers racing for one key exactly one
commit succeeds and its bytes are what is stored; with ``CHECKED`` (what a sink inherits), only
that whatever is stored is one writer's whole object. A sink never skips either test.
Optional fixtures refine the checks: ``sink_secrets`` (strings that must never appear in
``describe()`` or ``repr()``) and the class attribute :attr:`large_object_size`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pgvault.exceptions import ObjectExistsError, ObjectNotFoundError, PgVaultError
from pgvault.sinks.api import CreateGuarantee, ObjectInfo, Sink

MIB = 1 << 20


def _payload(size: int, seed: int = 0) -> bytes:
    """Incompressible, position-dependent bytes: a swapped or dropped part changes them."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest() * 1024
        block += 1
    return bytes(out[:size])


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


class SinkConformanceTests:
    """Tests a sink must pass; subclass it and provide a ``sink`` fixture (see module doc)."""

    large_object_size: ClassVar[int | None] = None
    """Bytes of the large-object test; by default 2.5 parts of the sink's ``part_size_mib``
    (or 12.5 MiB), so the object spans several parts with a short last one."""

    @pytest.fixture
    def sink(self) -> Sink:
        """The sink under test: override this fixture."""
        raise NotImplementedError("subclasses of SinkConformanceTests provide a 'sink' fixture")

    @pytest.fixture
    def sink_secrets(self) -> list[str]:
        """Strings (passwords, keys) that must never show in ``describe()`` or ``repr()``."""
        return []

    @pytest.fixture
    def prefix(self) -> str:
        """A fresh key prefix for one test."""
        return f"conformance-{uuid.uuid4().hex[:12]}/"

    # Writing and reading

    def test_round_trip(self, sink: Sink, prefix: str) -> None:
        """Bytes written through a writer in many chunks read back identical."""
        data = _payload(300_000, seed=1)
        key = prefix + "object.bin"
        with sink.open_writer(key) as writer:
            for chunk in _chunks(data, 7_919):
                writer.write(chunk)
            writer.commit()
        assert b"".join(sink.open_reader(key)) == data
        assert sink.read_bytes(key) == data

    def test_empty_object(self, sink: Sink, prefix: str) -> None:
        """An object with no bytes is stored, listed with size 0 and reads back empty."""
        key = prefix + "empty"
        with sink.open_writer(key) as writer:
            writer.commit()
        assert sink.list(prefix) == [ObjectInfo(key, 0)]
        assert sink.read_bytes(key) == b""

    def test_overwrite_replaces(self, sink: Sink, prefix: str) -> None:
        """Writing an existing key replaces its content whole."""
        key = prefix + "manifest.json"
        sink.write_bytes(key, b"first version, longer than the second")
        sink.write_bytes(key, b"second")
        assert sink.read_bytes(key) == b"second"
        assert sink.list(prefix) == [ObjectInfo(key, 6)]

    def test_large_multipart_object(self, sink: Sink, prefix: str) -> None:
        """An object of several parts (short last part) keeps every byte in order."""
        size = self.large_object_size or int(2.5 * (getattr(sink, "part_size_mib", 5) or 5) * MIB)
        data = _payload(size, seed=2)
        key = prefix + "large.bin"
        with sink.open_writer(key) as writer:
            for chunk in _chunks(data, MIB + 17):  # chunk and part borders never line up
                writer.write(chunk)
            writer.commit()
        assert sink.list(prefix) == [ObjectInfo(key, size)]
        digest = hashlib.sha256()
        read = 0
        for chunk in sink.open_reader(key):
            digest.update(chunk)
            read += len(chunk)
        assert read == size
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()

    def test_unicode_and_odd_keys(self, sink: Sink, prefix: str) -> None:
        """Keys with non-ASCII letters, spaces and punctuation are stored and listed exactly."""
        keys = [
            prefix + "données/ção ☃ 数据.bin",
            prefix + "with space/a+b=c,d@e (1).txt",
            prefix + "emoji/🐘.pgdump",
        ]
        for i, key in enumerate(keys):
            sink.write_bytes(key, f"content {i}".encode())
        assert sorted(i.key for i in sink.list(prefix)) == sorted(keys)
        for i, key in enumerate(keys):
            assert sink.read_bytes(key) == f"content {i}".encode()

    # Listing and deleting

    def test_list_filters_by_prefix(self, sink: Sink, prefix: str) -> None:
        """list(prefix) returns exactly the keys that start with it, with their sizes."""
        sink.write_bytes(prefix + "app/backups/1/a", b"1")
        sink.write_bytes(prefix + "app/backups/1/b", b"22")
        sink.write_bytes(prefix + "app/backups/10/a", b"333")
        sink.write_bytes(prefix + "apple/x", b"4444")
        assert sorted(sink.list(prefix + "app/backups/1/"), key=lambda i: i.key) == [
            ObjectInfo(prefix + "app/backups/1/a", 1),
            ObjectInfo(prefix + "app/backups/1/b", 2),
        ]
        assert sorted(i.key for i in sink.list(prefix + "app/backups/1")) == [
            prefix + "app/backups/1/a",
            prefix + "app/backups/1/b",
            prefix + "app/backups/10/a",
        ]
        assert sorted(i.key for i in sink.list(prefix + "app")) == [
            prefix + "app/backups/1/a",
            prefix + "app/backups/1/b",
            prefix + "app/backups/10/a",
            prefix + "apple/x",
        ]
        assert sink.list(prefix + "nothing/here/") == []

    def test_delete(self, sink: Sink, prefix: str) -> None:
        """delete removes the object; deleting a missing one is not an error."""
        sink.write_bytes(prefix + "keep", b"k")
        sink.write_bytes(prefix + "drop", b"d")
        sink.delete(prefix + "drop")
        sink.delete(prefix + "drop")
        sink.delete(prefix + "never-was")
        assert sink.list(prefix) == [ObjectInfo(prefix + "keep", 1)]
        assert not sink.exists(prefix + "drop")
        assert sink.exists(prefix + "keep")

    # Atomicity

    def test_uncommitted_object_is_invisible(self, sink: Sink, prefix: str) -> None:
        """Until commit, a written object is neither listed nor readable; then it is whole."""
        key = prefix + "data.bin"
        data = _payload(6 * MIB + 5, seed=3)
        writer = sink.open_writer(key)
        try:
            for chunk in _chunks(data, MIB):
                writer.write(chunk)
            assert sink.list(prefix) == []
            assert not sink.exists(key)
            with pytest.raises(ObjectNotFoundError):
                sink.read_bytes(key)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        assert sink.read_bytes(key) == data

    def test_sealed_object_is_invisible_until_commit(self, sink: Sink, prefix: str) -> None:
        """A sealed write (the pipeline seals each artifact as its stream ends) is still
        invisible; commit then publishes it whole, and an abort instead leaves nothing."""
        key = prefix + "sealed.bin"
        data = _payload(3 * MIB + 7, seed=5)
        writer = sink.open_writer(key)
        for chunk in _chunks(data, MIB):
            writer.write(chunk)
        writer.seal()
        assert sink.list(prefix) == []
        writer.commit()
        assert sink.read_bytes(key) == data
        dropped = sink.open_writer(prefix + "sealed-then-aborted.bin")
        dropped.write(b"never published")
        dropped.seal()
        dropped.abort()
        assert sink.list(prefix) == [ObjectInfo(key, len(data))]

    def test_abort_leaves_nothing(self, sink: Sink, prefix: str) -> None:
        """An aborted write (several parts in) leaves no object, and any leftover is removable."""
        key = prefix + "aborted.bin"
        writer = sink.open_writer(key)
        for chunk in _chunks(_payload(11 * MIB, seed=4), MIB):
            writer.write(chunk)
        writer.abort()
        writer.abort()  # safe twice
        assert sink.list(prefix) == []
        for name in sink.list_partials(prefix):
            sink.delete_partial(name)
        assert sink.list_partials(prefix) == []
        assert sink.list(prefix) == []

    def test_exception_in_writer_block_aborts(self, sink: Sink, prefix: str) -> None:
        """An exception inside ``with open_writer()`` aborts: nothing is stored."""
        key = prefix + "failed.bin"

        class BoomError(Exception):
            pass

        with pytest.raises(BoomError), sink.open_writer(key) as writer:
            writer.write(b"partial data")
            raise BoomError
        assert sink.list(prefix) == []

    def test_abort_keeps_previous_version(self, sink: Sink, prefix: str) -> None:
        """Aborting a rewrite leaves the committed object as it was."""
        key = prefix + "stable"
        sink.write_bytes(key, b"committed")
        writer = sink.open_writer(key)
        writer.write(b"never committed")
        writer.abort()
        assert sink.read_bytes(key) == b"committed"

    def test_write_after_commit_is_refused(self, sink: Sink, prefix: str) -> None:
        """A writer cannot be written to or committed again once committed."""
        writer = sink.open_writer(prefix + "once")
        writer.write(b"x")
        writer.commit()
        with pytest.raises(PgVaultError):
            writer.write(b"more")
        with pytest.raises(PgVaultError):
            writer.commit()

    # Create-if-absent

    def test_create_if_absent_refuses_existing(self, sink: Sink, prefix: str) -> None:
        """A create-if-absent write stores a new key, and never replaces an existing one (small
        or multipart): it raises ObjectExistsError and the first object stays whole."""
        key = prefix + "wal/000000010000000000000001"
        sink.write_bytes_if_absent(key, b"first")
        with pytest.raises(ObjectExistsError):
            sink.write_bytes_if_absent(key, b"second, longer than the first")
        size = int(2.5 * (getattr(sink, "part_size_mib", 5) or 5) * MIB)
        with pytest.raises(ObjectExistsError), sink.open_writer_if_absent(key) as writer:
            for chunk in _chunks(_payload(size, seed=5), MIB):
                writer.write(chunk)
            writer.commit()
        assert sink.read_bytes(key) == b"first"
        assert sink.list(prefix) == [ObjectInfo(key, 5)]
        for name in sink.list_partials(prefix):
            sink.delete_partial(name)
        assert sink.list(prefix) == [ObjectInfo(key, 5)]
        other = prefix + "wal/000000010000000000000002"
        sink.write_bytes_if_absent(other, b"")  # an empty object is created too
        assert sink.read_bytes(other) == b""

    def test_create_if_absent_race(self, sink: Sink, prefix: str) -> None:
        """Writers racing to create one key: an ATOMIC sink lets exactly one commit succeed and
        stores its bytes; any sink stores one writer's object whole, never a mix."""
        key = prefix + "race/000000010000000000000003"
        writers = 4
        payloads = [_payload(200_000, seed=10 + i) for i in range(writers)]
        barrier = threading.Barrier(writers)
        outcomes: list[str] = [""] * writers

        def create(i: int) -> None:
            writer = sink.open_writer_if_absent(key)
            try:
                writer.write(payloads[i])
                barrier.wait(timeout=60)
                writer.commit()
                outcomes[i] = "won"
            except ObjectExistsError:
                outcomes[i] = "refused"
            except BaseException as exc:
                writer.abort()
                outcomes[i] = f"error: {exc}"

        threads = [threading.Thread(target=create, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert all(o in ("won", "refused") for o in outcomes), outcomes
        stored = sink.read_bytes(key)
        assert stored in payloads
        winners = [i for i, o in enumerate(outcomes) if o == "won"]
        assert winners
        if sink.create_guarantee is CreateGuarantee.ATOMIC:
            assert len(winners) == 1, outcomes
            assert stored == payloads[winners[0]]

    # Missing objects and health

    def test_missing_object(self, sink: Sink, prefix: str) -> None:
        """Reading a missing key raises ObjectNotFoundError naming it; exists() is False."""
        key = prefix + "absent/object.bin"
        with pytest.raises(ObjectNotFoundError, match="absent/object"):
            b"".join(sink.open_reader(key))
        with pytest.raises(ObjectNotFoundError):
            sink.read_bytes(key)
        assert not sink.exists(key)

    def test_create_if_absent_never_replaces(self, sink: Sink, prefix: str) -> None:
        """Where a sink offers create_if_absent, it stores a new key once and leaves an existing
        one as it was (run leases rely on it); a sink without it raises NotImplementedError."""
        key = prefix + "locks/lease.json"
        try:
            created = sink.create_if_absent(key, b"first")
        except NotImplementedError:
            assert not sink.exists(key)
            return
        assert created is True
        assert sink.create_if_absent(key, b"second") is False
        assert sink.read_bytes(key) == b"first"
        assert [i.key for i in sink.list(prefix + "locks/")] == [key]

    def test_check_passes(self, sink: Sink) -> None:
        """check() succeeds on a reachable, writable sink."""
        sink.check()

    def test_describe_hides_secrets(self, sink: Sink, sink_secrets: list[str]) -> None:
        """describe() and repr() name the location but no credential."""
        text = sink.describe() + "\n" + repr(sink)
        assert sink.describe()
        for secret in sink_secrets:
            assert secret not in text

    # Through the pipeline

    def test_backup_through_the_pipeline(self, sink: Sink, prefix: str, tmp_path: Path) -> None:
        """A real pipeline run stores a backup the vault lists, verifies and reads back."""
        from pgvault.engine.pipeline import run
        from pgvault.pipeline_config import PipelineConfig
        from pgvault.sources.files import FilesSource
        from pgvault.vault.contents import Vault

        folder = tmp_path / "files"
        folder.mkdir()
        (folder / "a.txt").write_bytes(os.urandom(3 * MIB))
        (folder / "b.txt").write_text("hello")
        name = prefix.strip("/")
        config = PipelineConfig(name=name, source=FilesSource(paths=(folder,)), sink=sink)
        manifest = run(config)
        vault = Vault(sink, name)
        assert [m.backup_id for m in vault.backups()] == [manifest.backup_id]
        report = vault.verify(manifest, deep=True)
        assert report.ok, report.problems
