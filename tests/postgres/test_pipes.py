"""Reading a child's output: whole, in full chunks, however the child writes it."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from pgvault.postgres.client import PIPE_CAPACITY, pipe_chunks, widen_pipe

# A child that writes like pg_dump: many small pieces (4 KiB), pausing now and then, so a
# reader that is faster than it finds the pipe nearly empty at every read.
WRITER = (
    "import os, sys, time\n"
    "n = int(sys.argv[1])\n"
    "block = bytes(range(256)) * 16\n"
    "for i in range(n):\n"
    "    os.write(1, block[: 4096 - (i % 7)])\n"
    "    if i % 64 == 0:\n"
    "        time.sleep(0.001)\n"
)


def expected(n: int) -> bytes:
    block = bytes(range(256)) * 16
    return b"".join(block[: 4096 - (i % 7)] for i in range(n))


@pytest.mark.parametrize("widen", [True, False], ids=["1 MiB pipe", "default pipe"])
def test_chunks_are_full_and_nothing_is_lost_or_reordered(widen: bool) -> None:
    n = 1500  # about 6 MB: several full chunks and a short last one
    size = 1 << 20
    with subprocess.Popen([sys.executable, "-c", WRITER, str(n)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        capacity = widen_pipe(proc.stdout.fileno()) if widen else 0
        if widen:
            assert capacity >= PIPE_CAPACITY
        chunks = list(pipe_chunks(proc.stdout, capacity, size))
    assert proc.returncode == 0
    data = expected(n)
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()
    assert [len(c) for c in chunks[:-1]] == [size] * (len(data) // size)
    assert 0 < len(chunks[-1]) <= size


def test_an_empty_output_gives_no_chunk() -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert list(pipe_chunks(proc.stdout, widen_pipe(proc.stdout.fileno()), 1 << 20)) == []
    assert proc.returncode == 0
