"""Compressors on the real dump bytes: ratio, compression and decompression speed.

Each compressor runs in-process on the same sample of an uncompressed custom-format dump, the
bytes pgvault's transforms actually see. Speeds are MB/s of uncompressed data, single stream.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

import attrs
import zstandard

CHUNK = 1 << 20


@attrs.frozen
class CompressorResult:
    """One compressor setting on the sample."""

    name: str
    ratio: float
    compress_mb_s: float
    decompress_mb_s: float
    offered: bool
    """Whether pgvault offers it as a transform."""


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _time(fn: Callable[[], bytes]) -> tuple[float, bytes]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _gzip(level: int) -> tuple[Callable[[list[bytes]], bytes], Callable[[bytes], bytes]]:
    def comp(chunks: list[bytes]) -> bytes:
        obj = zlib.compressobj(level, zlib.DEFLATED, 31)
        return b"".join(obj.compress(c) for c in chunks) + obj.flush()

    def decomp(data: bytes) -> bytes:
        obj = zlib.decompressobj(31)
        return b"".join(obj.decompress(c) for c in _chunks(data)) + obj.flush()

    return comp, decomp


def _zstd(
    level: int, threads: int
) -> tuple[Callable[[list[bytes]], bytes], Callable[[bytes], bytes]]:
    def comp(chunks: list[bytes]) -> bytes:
        obj = zstandard.ZstdCompressor(
            level=level, threads=threads, write_checksum=True
        ).compressobj()
        return b"".join(obj.compress(c) for c in chunks) + obj.flush()

    def decomp(data: bytes) -> bytes:
        obj = zstandard.ZstdDecompressor().decompressobj()
        return b"".join(obj.decompress(c) for c in _chunks(data))

    return comp, decomp


def _lz4() -> tuple[Callable[[list[bytes]], bytes], Callable[[bytes], bytes]] | None:
    try:
        import lz4.frame as lz4f  # type: ignore[import-not-found]
    except ImportError:
        return None

    def comp(chunks: list[bytes]) -> bytes:
        c = lz4f.LZ4FrameCompressor()
        return c.begin() + b"".join(c.compress(x) for x in chunks) + c.flush()

    def decomp(data: bytes) -> bytes:
        d = lz4f.LZ4FrameDecompressor()
        return b"".join(d.decompress(c) for c in _chunks(data))

    return comp, decomp


def compare(sample: bytes) -> list[CompressorResult]:
    """Run every candidate on ``sample``; check each round-trips exactly."""
    candidates: list[
        tuple[str, bool, tuple[Callable[[list[bytes]], bytes], Callable[[bytes], bytes]]]
    ] = [(f"gzip -{lvl}", True, _gzip(lvl)) for lvl in (1, 6, 9)]
    for lvl in (1, 3, 9, 19):
        for threads in (0, 2):
            candidates.append((f"zstd -{lvl} threads={threads}", True, _zstd(lvl, threads)))
    lz4 = _lz4()
    if lz4 is not None:
        candidates.append(("lz4 (default)", False, lz4))
    chunks = _chunks(sample)
    mb = len(sample) / 1e6
    results = []
    for name, offered, (comp, decomp) in candidates:
        t_c, packed = _time(lambda comp=comp: comp(chunks))  # type: ignore[misc]
        t_d, unpacked = _time(lambda decomp=decomp, packed=packed: decomp(packed))  # type: ignore[misc]
        if unpacked != sample:
            raise RuntimeError(f"{name} did not round-trip")
        results.append(
            CompressorResult(name, len(sample) / len(packed), mb / t_c, mb / t_d, offered)
        )
    return results
