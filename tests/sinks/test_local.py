"""The local sink: atomic, private, and clear about disk full and permission denied."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgvault.exceptions import ObjectNotFoundError, SinkError
from pgvault.sinks.local import LocalSink
from pgvault.testing.fixtures import unavailable


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_folders_0700_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    """A vault is private even under a permissive umask."""
    old = os.umask(0o000)
    try:
        sink = LocalSink(tmp_path / "vault")
        sink.write_bytes("app/backups/1/dump", b"data")
    finally:
        os.umask(old)
    assert mode(tmp_path / "vault") == 0o700
    assert mode(tmp_path / "vault/app/backups/1") == 0o700
    assert mode(tmp_path / "vault/app/backups/1/dump") == 0o600


def test_nothing_visible_before_commit_and_abort_cleans_up(tmp_path: Path) -> None:
    """An uncommitted object is never listed; abort removes the temporary file, and the folder
    it created for it once that is empty (an interrupted backup leaves no empty folder)."""
    sink = LocalSink(tmp_path)
    writer = sink.open_writer("a/b")
    writer.write(b"x" * 1000)
    assert sink.list("") == []
    assert not (tmp_path / "a/b").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with sink.open_writer("a/b") as w:
        w.write(b"hello")
        w.commit()
    assert [(i.key, i.size) for i in sink.list("a/")] == [("a/b", 5)]
    assert sink.read_bytes("a/b") == b"hello"


def test_sealed_write_is_durable_and_takes_no_more_data(tmp_path: Path) -> None:
    """Seal fsyncs the temporary file (commit then only publishes) and refuses later data, so
    a stage that wrote after the end of its stream fails instead of publishing a torn object."""
    sink = LocalSink(tmp_path)
    writer = sink.open_writer("a/b")
    writer.write(b"hello")
    writer.seal()
    with pytest.raises(SinkError, match="after it was sealed"):
        writer.write(b" more")
    writer.commit()
    assert sink.read_bytes("a/b") == b"hello"


def test_missing_object_and_bad_keys(tmp_path: Path) -> None:
    """Reading a missing key raises ObjectNotFoundError; '..' keys are refused."""
    sink = LocalSink(tmp_path)
    with pytest.raises(ObjectNotFoundError):
        sink.read_bytes("nope")
    with pytest.raises(SinkError, match="refusing key"):
        sink.open_writer("../escape")
    sink.delete("nope")  # deleting a missing object is fine


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, so writes hit a genuine ENOSPC."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if result.returncode != 0:
        unavailable(f"cannot mount tmpfs: {result.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_a_clear_error_and_removes_the_partial_file(tiny_disk: Path) -> None:
    """ENOSPC is reported as 'no space left on device' and no partial file stays."""
    sink = LocalSink(tiny_disk / "vault")
    writer = sink.open_writer("app/big")
    with pytest.raises(SinkError, match="no space left on device"):
        for _ in range(4):
            writer.write(b"\0" * (512 * 1024))
        writer.commit()
    assert [p for p in tiny_disk.rglob("*") if p.is_file()] == []


def test_permission_denied_is_a_clear_error(tmp_path: Path) -> None:
    """A folder the user may not write to gives 'permission denied' naming the path.

    Root bypasses permissions, so the check runs in a child process that drops to 'nobody'.
    """
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            LocalSink(locked).write_bytes("app/x", b"data")
            message = "no error"
        except SinkError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"unexpected {exc!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        message = f.read()
    os.waitpid(pid, 0)
    if os.geteuid() != 0 and "no error" in message:
        pytest.skip("running as a user who owns the folder")
    assert "permission denied" in message
    assert str(locked) in message
