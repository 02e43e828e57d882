"""Compression transforms: zstd (the default we recommend) and gzip (for compatibility).

Both write standard formats, so a stored artifact is readable with ``zstd -d`` or ``gunzip`` alone:
a user is never locked in to pgvault to get at their data.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import attrs
import zstandard

from pgvault.exceptions import TransformError
from pgvault.transforms.api import Codec, DecodeContext, Transform


def _level_in(low: int, high: int) -> Any:
    return attrs.validators.and_(attrs.validators.ge(low), attrs.validators.le(high))


@attrs.frozen
class Zstd(Transform):
    """Zstandard compression.

    ``level`` 1-19 (3 is zstd's own default: fast with a good ratio); ``threads`` > 0 compresses
    with that many worker threads, 0 in the calling thread. Frames carry zstd's content checksum,
    so corruption is caught on decode even without the vault's digests.
    """

    type_name: ClassVar[str] = "zstd"
    suffix: ClassVar[str] = ".zst"

    level: int = attrs.field(default=3, validator=_level_in(1, 19))
    threads: int = attrs.field(default=0, validator=_level_in(0, 64))

    def manifest_params(self) -> dict[str, Any]:
        return {"level": self.level, "threads": self.threads}

    def encoder(self) -> Codec:
        compressor = zstandard.ZstdCompressor(
            level=self.level, threads=self.threads, write_checksum=True
        )
        return _ZstdEncoder(compressor.compressobj())

    @classmethod
    def decoder(cls, params: Mapping[str, Any], context: DecodeContext) -> Codec:
        return _ZstdDecoder()


class _ZstdEncoder:
    def __init__(self, obj: zstandard.ZstdCompressionObj) -> None:
        self._obj = obj

    def update(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush()


# Decoders hand output on in pieces of about this size at most, however well the data compressed:
# a dump's blank-padded rows compress over 10000x, so one compressed MiB can hold gigabytes.
OUTPUT_PIECE = 1 << 20

_ZSTD_MAGIC = 0xFD2FB528
_BLOCKS_PER_CALL = 8  # a zstd block decodes to at most 128 KiB: 8 blocks stay near OUTPUT_PIECE


class _ZstdBlockWalker:
    """Finds where zstd blocks end in a byte stream, following RFC 8878's frame layout.

    Only headers are read (a few bytes per block); block contents are skipped. The walker decides
    where to cut the input, never what it means: ``decompressobj`` still decodes and validates
    everything, so a walker lost in corrupt data cannot make corrupt data pass.
    """

    def __init__(self) -> None:
        self._state = "magic"
        self._head = bytearray()  # a header being gathered across chunk boundaries
        self._want = 4  # bytes the current header needs
        self._skip = 0  # bytes of block content (or skippable frame) still to pass
        self._checksum = False
        self.lost = False  # the data did not look like zstd: stop cutting, let zstd complain

    def block_ends(self, data: memoryview) -> Iterator[int]:
        """Offsets in ``data`` just after each block that ends inside it."""
        pos, n = 0, len(data)
        while pos < n and not self.lost:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                if self._skip == 0 and self._state == "block-body-last":
                    self._after_last_block()
                    yield pos
                elif self._skip == 0 and self._state == "block-body":
                    self._expect("block", 3)
                    yield pos
                elif self._skip == 0 and self._state in ("checksum", "skippable"):
                    self._expect("magic", 4)
                continue
            take = min(self._want - len(self._head), n - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) == self._want:
                self._parse()

    def _expect(self, state: str, size: int) -> None:
        self._state, self._want = state, size
        self._head.clear()

    def _after_last_block(self) -> None:
        if self._checksum:
            self._state, self._skip = "checksum", 4
        else:
            self._expect("magic", 4)

    def _parse(self) -> None:
        head = bytes(self._head)
        if self._state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == _ZSTD_MAGIC:
                self._expect("descriptor", 1)
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._expect("skippable-size", 4)
            else:
                self.lost = True
        elif self._state == "skippable-size":
            self._state, self._skip = "skippable", int.from_bytes(head, "little")
            self._head.clear()
            if self._skip == 0:
                self._expect("magic", 4)
        elif self._state == "descriptor":
            fhd = head[0]
            single = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
            if rest:
                self._expect("header-rest", rest)
            else:
                self._expect("block", 3)
        elif self._state == "header-rest":
            self._expect("block", 3)
        elif self._state == "block":
            header = int.from_bytes(head, "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                self.lost = True
                return
            self._head.clear()
            self._state = "block-body-last" if last else "block-body"
            self._skip = 1 if kind == 1 else size  # an RLE block stores one byte
            if self._skip == 0:  # an empty raw block ends at once
                self._skip = 0
                if last:
                    self._after_last_block()
                else:
                    self._expect("block", 3)


class _ZstdDecoder:
    """Decodes one or more concatenated zstd frames and insists the last one is complete.

    zstd's streaming API cannot cap the output of one call, and its bounded readers accept a
    truncated stream without error, which a restore must never do. So input is fed to
    ``decompressobj`` cut at block boundaries, a few blocks per call (:class:`_ZstdBlockWalker`).
    """

    def __init__(self) -> None:
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._walker = _ZstdBlockWalker()

    def update(self, data: bytes) -> bytes:
        return b"".join(self.update_chunks(data))

    def update_chunks(self, data: bytes) -> Iterator[bytes]:
        """Decode ``data``, yielding output in bounded pieces as it is produced."""
        view = memoryview(data)
        start = blocks = 0
        for end in self._walker.block_ends(view):
            blocks += 1
            if blocks == _BLOCKS_PER_CALL:
                out = self._decode(view[start:end])
                if out:
                    yield out
                start, blocks = end, 0
        out = self._decode(view[start:])
        if out:
            yield out

    def _decode(self, data: bytes | memoryview) -> bytes:
        out: list[bytes] = []
        try:
            while data:
                self._in_frame = True
                out.append(self._obj.decompress(data))
                if not self._obj.eof:
                    break
                # A frame ended inside this slice: continue with the next frame, if any.
                data = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._in_frame = False
        except zstandard.ZstdError as exc:
            raise TransformError(f"zstd data is corrupt: {exc}") from exc
        return b"".join(out)

    def finish(self) -> bytes:
        if self._in_frame:
            raise TransformError("zstd data is truncated: the last frame is incomplete")
        return b""


@attrs.frozen
class Gzip(Transform):
    """gzip compression (RFC 1952), for tools and habits that expect ``.gz``; ``level`` 1-9."""

    type_name: ClassVar[str] = "gzip"
    suffix: ClassVar[str] = ".gz"

    level: int = attrs.field(default=6, validator=_level_in(1, 9))

    def manifest_params(self) -> dict[str, Any]:
        return {"level": self.level}

    def encoder(self) -> Codec:
        return _GzipEncoder(zlib.compressobj(self.level, zlib.DEFLATED, 31))

    @classmethod
    def decoder(cls, params: Mapping[str, Any], context: DecodeContext) -> Codec:
        return _GzipDecoder()


class _GzipEncoder:
    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def update(self, data: bytes) -> bytes:
        return bytes(self._obj.compress(data))

    def finish(self) -> bytes:
        return bytes(self._obj.flush())


class _GzipDecoder:
    """Decodes gzip members back to back (as ``gunzip`` does) and insists the last is complete.

    Output comes in pieces of at most :data:`OUTPUT_PIECE` (zlib's ``max_length``).
    """

    def __init__(self) -> None:
        self._obj = zlib.decompressobj(31)
        self._in_member = False

    def update(self, data: bytes) -> bytes:
        return b"".join(self.update_chunks(data))

    def update_chunks(self, data: bytes) -> Iterator[bytes]:
        """Decode ``data``, yielding output in bounded pieces as it is produced."""
        try:
            while data:
                self._in_member = True
                out = self._obj.decompress(data, OUTPUT_PIECE)
                if out:
                    yield out
                if self._obj.unconsumed_tail:
                    data = self._obj.unconsumed_tail
                    continue
                if not self._obj.eof:
                    break
                data = self._obj.unused_data
                self._obj = zlib.decompressobj(31)
                self._in_member = False
        except zlib.error as exc:
            raise TransformError(f"gzip data is corrupt: {exc}") from exc

    def finish(self) -> bytes:
        if self._in_member:
            raise TransformError("gzip data is truncated: the last member is incomplete")
        return b""
