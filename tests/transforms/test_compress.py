"""Compressors: exact round trips, standard formats, and corruption never passing silently."""

from __future__ import annotations

import gzip
import os
import subprocess

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgvault.exceptions import TransformError
from pgvault.transforms.api import Codec, DecodeContext, Transform
from pgvault.transforms.compress import Gzip, Zstd

TRANSFORMS: list[Transform] = [Zstd(level=1), Zstd(level=3, threads=2), Gzip(level=1), Gzip()]


def run_codec(codec: Codec, chunks: list[bytes]) -> bytes:
    return b"".join(codec.update(c) for c in chunks) + codec.finish()


def encode(t: Transform, chunks: list[bytes]) -> bytes:
    return run_codec(t.encoder(), chunks)


def decode(t: Transform, data: bytes, split: int = 7) -> bytes:
    codec = type(t).decoder(t.manifest_params(), DecodeContext())
    pieces = [data[i : i + split] for i in range(0, len(data), split)] or [b""]
    return run_codec(codec, pieces)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.binary(max_size=5000), max_size=8))
def test_round_trip_any_chunking(transform: Transform, chunks: list[bytes]) -> None:
    """Whatever the chunking and content (empty too), decode(encode(x)) == x."""
    assert decode(transform, encode(transform, chunks), split=97) == b"".join(chunks)


def test_outputs_are_standard_formats() -> None:
    """Stored artifacts open with the standard tools' libraries: no lock-in."""
    data = os.urandom(1000) + b"a" * 100_000
    assert gzip.decompress(encode(Gzip(), [data])) == data
    assert zstandard.ZstdDecompressor().decompressobj().decompress(encode(Zstd(), [data])) == data
    zstd_cli = subprocess.run(["which", "zstd"], capture_output=True).returncode == 0
    if zstd_cli:
        out = subprocess.run(["zstd", "-dc"], input=encode(Zstd(), [data]), capture_output=True)
        assert out.stdout == data


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
def test_truncation_is_detected(transform: Transform) -> None:
    """A stream cut short raises instead of returning a shorter result."""
    data = encode(transform, [os.urandom(50_000)])
    with pytest.raises(TransformError, match=r"truncated|corrupt"):
        decode(transform, data[: len(data) // 2])


@pytest.mark.parametrize("transform", TRANSFORMS, ids=repr)
def test_flipped_byte_is_detected(transform: Transform) -> None:
    """A flipped byte in the middle fails decoding (zstd frame checksum, gzip CRC)."""
    data = bytearray(encode(transform, [os.urandom(20_000) + b"z" * 20_000]))
    data[len(data) // 2] ^= 0x40
    with pytest.raises(TransformError):
        decode(transform, bytes(data))


def test_concatenated_frames_decode_like_the_cli() -> None:
    """Several concatenated frames/members decode back to back, as zstd -d and gunzip do."""
    for t in (Zstd(), Gzip()):
        both = encode(t, [b"first "]) + encode(t, [b"second"])
        assert decode(t, both) == b"first second"


@pytest.mark.parametrize("transform", [Zstd(level=3), Zstd(level=1, threads=2), Gzip()], ids=repr)
def test_decoding_hands_on_bounded_pieces(transform: Transform) -> None:
    """Blank-padded rows compress over 10000x; a restore still never holds more than ~1 MiB of
    decoded output per piece (it used to hold the whole expansion of a compressed chunk)."""
    row = b"1\t1\t0\t" + b" " * 84 + b"\n"
    raw = row * (64 * 1024 * 1024 // len(row)) + os.urandom(3000) + b"abc" * 3_000_000
    stored = encode(transform, [raw[i : i + (1 << 20)] for i in range(0, len(raw), 1 << 20)])
    codec = type(transform).decoder(transform.manifest_params(), DecodeContext())
    pieces = [
        len(piece)
        for i in range(0, len(stored), 1 << 20)
        for piece in codec.update_chunks(stored[i : i + (1 << 20)])  # type: ignore[attr-defined]
    ]
    codec.finish()
    assert sum(pieces) == len(raw)
    assert max(pieces) <= 1 << 20
