"""The aes-256-gcm transform: its byte format, tamper detection, keys, and real backups with it."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import example, given, settings
from hypothesis import strategies as st

import pgvault
from pgvault.testing import PostgresCluster
from pgvault.transforms import keys
from pgvault.transforms.api import ArtifactBinding, DecodeContext
from pgvault.transforms.encrypt import MAX_SEGMENT_SIZE, Aes256Gcm, Header
from tests.conftest import pgvault_cli, snapshot_database

ConfigMaker = Callable[..., Path]

MASTER = bytes(range(32))
IDENTITY = keys.Identity(bytes(range(32, 64)))
PASSPHRASE = "correct horse battery staple"

# Known-answer vectors, generated once from the fixed inputs beside them. They pin the format: if
# one fails, old backups would no longer decode. Do not regenerate them; add a format version.
#
# Format version 1, written by pgvault 0.1.0 and no longer written: decode-only, for old backups.
# fmt: off
HEADER_KEY_FILE = (
    "504756454e430d0a"  # magic "PGVENC\r\n"
    "01"                # format version 1
    "01"                # key source: key file
    "0000003a"          # header length 58
    "00000010"          # segment size 16
    + "11" * 32         # salt
    + "5ba6168a899a209d"  # key id of MASTER
)
KAT_KEY_FILE: list[tuple[bytes, str]] = [
    (b"", HEADER_KEY_FILE + "30f96cb2c675b266e6877acf869bf929"),
    (b"pgvault", HEADER_KEY_FILE + "0a57188a285aaaddff5a629c9b8c8e12f0043df85d716b"),
    (
        bytes(range(32)),  # exactly two segments
        HEADER_KEY_FILE
        + "5df2ba789b7a3aecf611ee0364babece65449adb8f12f6ed29fe07491759163884482feb70ae6fb1"
          "7dd9bf5c16968d9b0658a05e9d4b9c4cd374eb1c739268c8",
    ),
    (
        b"forty bytes of plaintext, three segments",
        HEADER_KEY_FILE
        + "3b9cca0fe65f5e928a7d972807d190b163b8679e1764dfa50be80d68061d3bbcf15d1fcccca8b8734663"
          "09f5c5767cd4e55ca0f9e09541b99ebac6850189c6526189cd1efc9936bf5ba1bef45d8e1c52ca018032"
          "0b0c2677",
    ),
]
KAT_PASSPHRASE = (
    b"pgvault passphrase vector",
    "504756454e430d0a" "01" "02" "0000004d" "00000010"  # magic, v1, passphrase, H=77, S=16
    + "22" * 32                                         # salt
    + "c20cf68016028d1c"                                # key id
    + "0a" "08" "01"                                    # scrypt log_n 10, r 8, p 1
    + "000102030405060708090a0b0c0d0e0f"                # scrypt salt
    + "2ffd9795b7479af1394b42983a5acc4c18f090d74cfe398fe046f68566e23939c78a2689d1e49702926dfa"
      "d1de68681e88c5e3ddaba920184f",
)
KAT_RECIPIENT = (
    b"pgvault recipient vector",
    "504756454e430d0a" "01" "03" "0000008b" "00000010"  # magic, v1, recipients, H=139, S=16
    + "55" * 32                                         # salt
    + "01"                                              # one stanza
    + "9b1d76e1cacc496d"                                # key id of IDENTITY's public key
    + "ff2ee45601ec1b67310c7790404585ae697331eee1c1f8cf2419731c1fff3e6b"  # ephemeral public
    + "3d8d9e2f019243889c17328173480e94ff7f956bba89996150b785d6303a9790d928cf7409a6a6d910dd8a"
      "55bd0ecd6cac"                                    # wrapped file key
    + "f89c9984a9e516b8cbb68f2031b33a95b013d5c1941375578f16c385c9f7a5ebbb4b8ec799cad31874c934"
      "60b0349b40136957a56c47b9",
)

# Format version 2: the header ends with the artifact binding, here BINDING (or an empty one).
BINDING = ArtifactBinding("20260101T000000Z-0a1b2c", "main.pgdump.zst.aes")
BINDING_FIELD = (
    "002e"                                      # binding length 46, then BINDING's bytes:
    "0017" + b"20260101T000000Z-0a1b2c".hex()   # backup id: length 23, UTF-8
    + "0013" + b"main.pgdump.zst.aes".hex()     # artifact path: length 19, UTF-8
)
V2_HEADER_KEY_FILE = (
    "504756454e430d0a" "02" "01"  # magic, format version 2, key file
    "0000006a" "00000010"         # header length 106 (58 + 48), segment size 16
    + "11" * 32                   # salt
    + "5ba6168a899a209d"          # key id of MASTER
    + BINDING_FIELD
)
KAT_V2_KEY_FILE: list[tuple[bytes, str]] = [
    (b"", V2_HEADER_KEY_FILE + "9e2d5d4f47e24d47bd32165794e81c8d"),
    (
        b"forty bytes of plaintext, three segments",
        V2_HEADER_KEY_FILE
        + "3b9cca0fe65f5e928a7d972807d190b1d27047c72e39a573a61516ad3687394af15d1fcccca8b8734663"
          "09f5c5767cd4549480a0d9c83b6f3347dd403113c4a46189cd1efc9936bfea699ead64d3668467fc9bf7"
          "3b962481",
    ),
]
KAT_V2_UNBOUND = (  # what encoder() writes, knowing no binding
    b"pgvault",
    "504756454e430d0a" "02" "01" "0000003c" "00000010"  # magic, v2, key file, H=60, S=16
    + "11" * 32 + "5ba6168a899a209d"                    # salt, key id
    + "0000"                                            # binding length 0: bound to nothing
    + "0a57188a285aaa9c1e9b32b951a997df02072f000590a3",
)
KAT_V2_PASSPHRASE = (
    b"pgvault passphrase vector",
    "504756454e430d0a" "02" "02" "0000007d" "00000010"  # magic, v2, passphrase, H=125, S=16
    + "22" * 32                                         # salt
    + "c20cf68016028d1c"                                # key id
    + "0a" "08" "01"                                    # scrypt log_n 10, r 8, p 1
    + "000102030405060708090a0b0c0d0e0f"                # scrypt salt
    + BINDING_FIELD
    + "2ffd9795b7479af1394b42983a5acc4c48757038142b041b15e11c7c3d68d1eec78a2689d1e49702923d7f"
      "313130bd231c30443752f2aaf098",
)
KAT_V2_RECIPIENT = (
    b"pgvault recipient vector",
    "504756454e430d0a" "02" "03" "000000bb" "00000010"  # magic, v2, recipients, H=187, S=16
    + "55" * 32                                         # salt
    + "01"                                              # one stanza
    + "9b1d76e1cacc496d"                                # key id of IDENTITY's public key
    + "ff2ee45601ec1b67310c7790404585ae697331eee1c1f8cf2419731c1fff3e6b"  # ephemeral public
    + "3d8d9e2f019243889c17328173480e94ff7f956bba89996150b785d6303a9790d928cf7409a6a6d910dd8a"
      "55bd0ecd6c"                                      # wrapped file key
    + BINDING_FIELD
    + "acf89c9984a9e516b8cbb68f2031b33a067a152504b5c47c1886b61174621ddeebbb4b8ec799cad38bbecf"
      "c4a591e3920f1ac98554c7adc2",
)
# fmt: on

UNBOUND_HEADER = 60
"""Length of a key-file header with an empty binding (what ``encoder()`` writes)."""


def fixed_random(*chunks: bytes) -> Callable[[int], bytes]:
    """A randomness source that returns ``chunks`` in order (checking each draw's size)."""
    queue = list(chunks)

    def draw(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return draw


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key file holding MASTER."""
    path = tmp_path_factory.mktemp("keys") / "master.key"
    path.write_text(keys.encode_key(MASTER))
    path.chmod(0o600)
    return path


@pytest.fixture
def identity_path(tmp_path: Path) -> Path:
    """An identity file holding IDENTITY."""
    path = tmp_path / "identity"
    path.write_text(keys.encode_identity(IDENTITY))
    path.chmod(0o600)
    return path


def encrypt(transform: Aes256Gcm, data: bytes, cuts: list[int] | None = None) -> bytes:
    """``data`` through a fresh encoder, fed in pieces split at ``cuts``."""
    enc = transform.encoder()
    return b"".join(enc.update(piece) for piece in split(data, cuts)) + enc.finish()


def decrypt(
    transform: Aes256Gcm,
    blob: bytes,
    cuts: list[int] | None = None,
    *,
    context: DecodeContext | None = None,
) -> bytes:
    """``blob`` through a decoder built the way restore builds it."""
    dec = Aes256Gcm.decoder(
        transform.manifest_params(), context or DecodeContext(configured=(transform,))
    )
    return b"".join(dec.update(piece) for piece in split(blob, cuts)) + dec.finish()


def released_before_failure(
    transform: Aes256Gcm, blob: bytes, step: int, binding: ArtifactBinding | None = None
) -> tuple[bytes, Exception | None]:
    """What a decoder handed out, fed ``step`` bytes at a time, before it raised (if it did)."""
    context = DecodeContext(configured=(transform,), binding=binding)
    dec = Aes256Gcm.decoder(transform.manifest_params(), context)
    out = bytearray()
    try:
        for i in range(0, len(blob), step):
            out += dec.update(blob[i : i + step])
        out += dec.finish()
    except pgvault.TransformError as exc:
        return bytes(out), exc
    return bytes(out), None


def split(data: bytes, cuts: list[int] | None) -> Iterator[bytes]:
    points = sorted({min(c, len(data)) for c in cuts or []})
    start = 0
    for p in [*points, len(data)]:
        yield data[start:p]
        start = p


def reference_decrypt(blob: bytes, master: bytes) -> bytes:
    """A reader written from docs/encryption-format.md alone, for key-file artifacts (v1 and v2)."""
    assert blob[:8] == b"PGVENC\r\n" and blob[8] in (1, 2) and blob[9] == 1
    length, size = struct.unpack(">II", blob[10:18])
    header, body = blob[:length], blob[length:]
    key = HKDF(hashes.SHA256(), 32, header[18:50], b"pgvault aes-256-gcm v1 payload").derive(master)
    sealed = [body[i : i + size + 16] for i in range(0, len(body), size + 16)]
    return b"".join(
        AESGCM(key).decrypt(i.to_bytes(11, "big") + bytes([i == len(sealed) - 1]), seg, header)
        for i, seg in enumerate(sealed)
    )


def reference_encrypt_v1(
    plain: bytes, master: bytes, segment_size: int, salt: bytes | None = None
) -> bytes:
    """A key-file artifact as pgvault wrote it before format version 2, from the docs alone."""
    salt = salt or os.urandom(32)
    kid = bytes.fromhex(keys.key_id(master))
    header = b"PGVENC\r\n\x01\x01" + struct.pack(">II", 58, segment_size) + salt + kid
    key = HKDF(hashes.SHA256(), 32, salt, b"pgvault aes-256-gcm v1 payload").derive(master)
    segments = [plain[i : i + segment_size] for i in range(0, len(plain), segment_size)] or [b""]
    return header + b"".join(
        AESGCM(key).encrypt(i.to_bytes(11, "big") + bytes([i == len(segments) - 1]), seg, header)
        for i, seg in enumerate(segments)
    )


def bound_to(transform: Aes256Gcm, binding: ArtifactBinding) -> DecodeContext:
    """The context the vault decodes artifact ``binding`` with."""
    return DecodeContext(configured=(transform,), binding=binding)


# The format, pinned


@pytest.mark.parametrize(
    ("plain", "expected"), KAT_KEY_FILE, ids=["empty", "short", "exact", "three"]
)
def test_version_1_vectors_key_file_still_decode(
    key_path: Path, plain: bytes, expected: str
) -> None:
    """Key-file artifacts of old backups decode, a binding asked for or not (they carry none)."""
    transform = Aes256Gcm(key_file=key_path, segment_size=16)
    blob = bytes.fromhex(expected)
    assert decrypt(transform, blob) == plain
    assert decrypt(transform, blob, context=bound_to(transform, BINDING)) == plain
    assert reference_decrypt(blob, MASTER) == plain
    assert reference_encrypt_v1(plain, MASTER, 16, b"\x11" * 32) == blob


def test_version_1_vector_passphrase_still_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A passphrase artifact of an old backup decodes."""
    monkeypatch.setenv("KAT_PASSPHRASE", PASSPHRASE)
    plain, expected = KAT_PASSPHRASE
    fresh = Aes256Gcm(passphrase_env="KAT_PASSPHRASE", scrypt_log_n=10, segment_size=16)
    dec = Aes256Gcm.decoder({}, bound_to(fresh, BINDING))
    assert dec.update(bytes.fromhex(expected)) + dec.finish() == plain


def test_version_1_vector_recipient_still_decodes(identity_path: Path) -> None:
    """A recipient artifact of an old backup decodes."""
    plain, expected = KAT_RECIPIENT
    dec = Aes256Gcm.decoder({}, DecodeContext(identities=(identity_path,), binding=BINDING))
    assert dec.update(bytes.fromhex(expected)) + dec.finish() == plain


@pytest.mark.parametrize(("plain", "expected"), KAT_V2_KEY_FILE, ids=["empty", "three"])
def test_known_answer_vectors_key_file(key_path: Path, plain: bytes, expected: str) -> None:
    """Fixed key, salt, binding and input give exactly the committed bytes, which decode back."""
    transform = Aes256Gcm(key_file=key_path, segment_size=16)
    enc = transform._encoder(fixed_random(b"\x11" * 32), BINDING)
    assert (enc.update(plain) + enc.finish()).hex() == expected
    assert (
        decrypt(transform, bytes.fromhex(expected), context=bound_to(transform, BINDING)) == plain
    )
    assert reference_decrypt(bytes.fromhex(expected), MASTER) == plain
    assert Header.decode(bytes.fromhex(V2_HEADER_KEY_FILE)).binding == BINDING


def test_known_answer_vector_unbound(key_path: Path) -> None:
    """encoder(), knowing no binding, writes an empty one, which decodes wherever it is read."""
    plain, expected = KAT_V2_UNBOUND
    transform = Aes256Gcm(key_file=key_path, segment_size=16)
    enc = transform._encoder(fixed_random(b"\x11" * 32))
    assert (enc.update(plain) + enc.finish()).hex() == expected
    assert (
        decrypt(transform, bytes.fromhex(expected), context=bound_to(transform, BINDING)) == plain
    )
    assert reference_decrypt(bytes.fromhex(expected), MASTER) == plain


def test_known_answer_vector_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    """A passphrase artifact with fixed scrypt and HKDF salts is byte-for-byte the committed one."""
    monkeypatch.setenv("KAT_PASSPHRASE", PASSPHRASE)
    plain, expected = KAT_V2_PASSPHRASE
    transform = Aes256Gcm(passphrase_env="KAT_PASSPHRASE", scrypt_log_n=10, segment_size=16)
    enc = transform._encoder(fixed_random(bytes(range(16)), b"\x22" * 32), BINDING)
    assert (enc.update(plain) + enc.finish()).hex() == expected
    fresh = Aes256Gcm(passphrase_env="KAT_PASSPHRASE", scrypt_log_n=10, segment_size=16)
    dec = Aes256Gcm.decoder({}, bound_to(fresh, BINDING))
    assert dec.update(bytes.fromhex(expected)) + dec.finish() == plain


def test_known_answer_vector_recipient(identity_path: Path) -> None:
    """A recipient artifact with fixed file, ephemeral and salt bytes is the committed one."""
    plain, expected = KAT_V2_RECIPIENT
    transform = Aes256Gcm(recipients=(str(IDENTITY.recipient),), segment_size=16)
    enc = transform._encoder(fixed_random(b"\x55" * 32, b"\x33" * 32, b"\x44" * 32), BINDING)
    assert (enc.update(plain) + enc.finish()).hex() == expected
    dec = Aes256Gcm.decoder({}, DecodeContext(identities=(identity_path,), binding=BINDING))
    assert dec.update(bytes.fromhex(expected)) + dec.finish() == plain


def test_binding_bytes_are_length_prefixed() -> None:
    """A binding's bytes are each field's UTF-8 after its 2-byte length; only such bytes parse."""
    assert BINDING.canonical().hex() == BINDING_FIELD[4:]
    assert ArtifactBinding.from_canonical(BINDING.canonical()) == BINDING
    assert ArtifactBinding("a", "bc").canonical() != ArtifactBinding("ab", "c").canonical()
    for bad in (b"", b"\x00\x01a", BINDING.canonical() + b"x", b"\x00\x01\xff\x00\x00"):
        with pytest.raises(ValueError):
            ArtifactBinding.from_canonical(bad)


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(max_size=600),
    segment_size=st.integers(1, 64),
    cuts=st.lists(st.integers(0, 700), max_size=6),
    decode_cuts=st.lists(st.integers(0, 2000), max_size=6),
)
@example(data=b"", segment_size=16, cuts=[], decode_cuts=[])
@example(data=bytes(64), segment_size=16, cuts=[], decode_cuts=[])
@example(data=bytes(64), segment_size=16, cuts=[16, 32, 48], decode_cuts=[])
@example(data=bytes(1), segment_size=1, cuts=[], decode_cuts=[])
def test_round_trip_any_size_and_chunking(
    key_path: Path, data: bytes, segment_size: int, cuts: list[int], decode_cuts: list[int]
) -> None:
    """Any plaintext, segment size and chunking round-trips, to the documented length."""
    transform = Aes256Gcm(key_file=key_path, segment_size=segment_size)
    blob = encrypt(transform, data, cuts)
    segments = max(1, -(-len(data) // segment_size))
    assert len(blob) == UNBOUND_HEADER + len(data) + 16 * segments
    assert decrypt(transform, blob, decode_cuts) == data
    assert reference_decrypt(blob, MASTER) == data


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(max_size=200),
    segment_size=st.integers(1, 32),
    pos=st.integers(0, 10_000),
    bit=st.integers(0, 7),
)
def test_a_flipped_bit_anywhere_is_detected(
    key_path: Path, data: bytes, segment_size: int, pos: int, bit: int
) -> None:
    """Flipping any bit of the stored bytes fails decoding, having released only genuine bytes."""
    transform = Aes256Gcm(key_file=key_path, segment_size=segment_size)
    blob = bytearray(encrypt(transform, data))
    blob[pos % len(blob)] ^= 1 << bit
    released, error = released_before_failure(transform, bytes(blob), 7)
    assert error is not None
    assert data.startswith(released)


def test_every_byte_of_an_artifact_is_protected(key_path: Path) -> None:
    """Flipping each byte in turn of a four-segment artifact, header included, is always caught."""
    transform = Aes256Gcm(key_file=key_path, segment_size=16)
    data = bytes(range(64))
    blob = bytearray(encrypt(transform, data))
    for pos in range(len(blob)):
        blob[pos] ^= 0x01
        released, error = released_before_failure(transform, bytes(blob), 7)
        blob[pos] ^= 0x01
        assert error is not None, f"flipping byte {pos} went unnoticed"
        assert data.startswith(released)


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=200), segment_size=st.integers(1, 32), cut=st.integers(0, 10_000))
@example(data=bytes(64), segment_size=16, cut=UNBOUND_HEADER + 32)  # right after segment 1 of 4
@example(data=bytes(64), segment_size=16, cut=0)
def test_any_truncation_is_detected(
    key_path: Path, data: bytes, segment_size: int, cut: int
) -> None:
    """Cutting the stored bytes short anywhere fails decoding, having released only true bytes."""
    transform = Aes256Gcm(key_file=key_path, segment_size=segment_size)
    blob = encrypt(transform, data)
    cut = cut % len(blob)
    released, error = released_before_failure(transform, blob[:cut], 5)
    assert error is not None
    assert data.startswith(released)


# Tampering, named


@pytest.fixture
def four_segments(key_path: Path) -> tuple[Aes256Gcm, bytes, list[bytes], bytes]:
    """A transform, a header and the four sealed segments of 64 distinct plaintext bytes."""
    transform = Aes256Gcm(key_file=key_path, segment_size=16)
    blob = encrypt(transform, bytes(range(64)))
    header, body = blob[:UNBOUND_HEADER], blob[UNBOUND_HEADER:]
    return transform, header, [body[i : i + 32] for i in range(0, 128, 32)], bytes(range(64))


def assert_fails(transform: Aes256Gcm, blob: bytes, match: str, segment: int | None) -> None:
    with pytest.raises(pgvault.CiphertextError, match=match) as info:
        decrypt(transform, blob)
    assert info.value.segment == segment


def test_reordered_segments_are_named(four_segments: Any) -> None:
    """Swapping segments 1 and 2 fails at segment 1."""
    transform, header, segs, _ = four_segments
    blob = header + segs[0] + segs[2] + segs[1] + segs[3]
    assert_fails(transform, blob, r"segment 1: failed authentication", 1)


def test_dropped_segment_is_named(four_segments: Any) -> None:
    """Leaving segment 1 out fails at segment 1."""
    transform, header, segs, _ = four_segments
    assert_fails(
        transform, header + segs[0] + segs[2] + segs[3], r"segment 1: failed authentication", 1
    )


def test_truncation_at_a_segment_boundary_is_named(four_segments: Any) -> None:
    """Dropping the last segment (a clean cut) says the artifact ends after a non-last segment."""
    transform, header, segs, _ = four_segments
    assert_fails(
        transform,
        header + b"".join(segs[:3]),
        r"segment 3: missing; .*truncated after segment 2",
        3,
    )


def test_truncation_inside_a_segment_is_named(four_segments: Any) -> None:
    """A cut inside segment 2 names segment 2."""
    transform, header, segs, _ = four_segments
    assert_fails(
        transform, header + segs[0] + segs[1] + segs[2][:20], r"segment 2: .*cut short inside it", 2
    )


def test_appended_bytes_are_named(four_segments: Any) -> None:
    """Bytes after the last segment are reported as appended data after segment 3."""
    transform, header, segs, _ = four_segments
    assert_fails(
        transform, header + b"".join(segs) + b"x", r"segment 4: data follows the last segment", 4
    )


def test_appended_segment_from_another_artifact_is_detected(four_segments: Any) -> None:
    """A genuine segment of another artifact, spliced on the end, does not pass."""
    transform, header, segs, _ = four_segments
    other = encrypt(transform, bytes(100))[UNBOUND_HEADER:]
    with pytest.raises(pgvault.CiphertextError):
        decrypt(transform, header + b"".join(segs) + other[:32])


def test_swapped_header_is_detected(four_segments: Any) -> None:
    """The header of another artifact under the same key fails segment 0."""
    transform, _header, segs, _ = four_segments
    other_header = encrypt(transform, bytes(64))[:UNBOUND_HEADER]
    assert_fails(
        transform, other_header + b"".join(segs), r"segment 0: .*the header is not this data's", 0
    )


def test_edited_segment_size_is_detected(four_segments: Any) -> None:
    """Changing the header's segment size (to 32) fails segment 0: the header is authenticated."""
    transform, header, segs, _ = four_segments
    edited = header[:14] + (32).to_bytes(4, "big") + header[18:]
    with pytest.raises(pgvault.CiphertextError, match="segment 0"):
        decrypt(transform, edited + b"".join(segs))


@pytest.mark.parametrize("size", [0, 10, 64], ids=["empty", "one-segment", "four-segments"])
def test_an_artifact_read_as_another_is_refused_before_any_byte(key_path: Path, size: int) -> None:
    """Read as another artifact or in another backup, a bound artifact fails naming both, having
    released nothing; read as itself, or outside a vault (no binding asked for), it decodes."""
    transform = Aes256Gcm(key_file=key_path, segment_size=16)
    data = bytes(range(size))
    enc = transform.encoder_for(BINDING)
    blob = enc.update(data) + enc.finish()
    assert decrypt(transform, blob, context=bound_to(transform, BINDING)) == data
    assert decrypt(transform, blob) == data
    for other in (
        ArtifactBinding(BINDING.backup_id, "data-01.pgdump.zst.aes"),
        ArtifactBinding("20260202T000000Z-ffffff", BINDING.path),
    ):
        released, error = released_before_failure(transform, blob, 7, other)
        assert released == b""
        assert isinstance(error, pgvault.CiphertextError)
        assert str(error) == (
            f"artifact {other.path} of backup {other.backup_id} was encrypted for artifact "
            f"{BINDING.path} of backup {BINDING.backup_id}: it was moved or swapped"
        )
        assert error.artifact == other.path


def test_an_edited_binding_fails_authentication(key_path: Path) -> None:
    """Rewriting the binding in the header (to the backup it was moved to) fails segment 0: the
    binding is authenticated, so an attacker cannot make a moved artifact claim its new place."""
    transform = Aes256Gcm(key_file=key_path, segment_size=16)
    enc = transform.encoder_for(BINDING)
    blob = enc.update(b"old data") + enc.finish()
    moved = ArtifactBinding("20260202T000000Z-ffffff", BINDING.path)
    edited = blob.replace(BINDING.canonical(), moved.canonical())
    assert edited != blob
    with pytest.raises(pgvault.CiphertextError, match="segment 0: failed authentication"):
        decrypt(transform, edited, context=bound_to(transform, moved))


def test_a_binding_too_long_for_the_header_is_refused_when_writing(key_path: Path) -> None:
    """An artifact name that would push the header past what readers accept fails the encoder,
    rather than writing an artifact nothing can read."""
    transform = Aes256Gcm(key_file=key_path)
    with pytest.raises(pgvault.TransformError, match="more than the 65536 allowed"):
        transform.encoder_for(ArtifactBinding(BINDING.backup_id, "x" * 65500))


def test_segments_are_released_only_once_authenticated(four_segments: Any) -> None:
    """A full segment is held until a byte follows it; a bad segment 2 releases 0 and 1 only."""
    transform, header, segs, plain = four_segments
    dec = Aes256Gcm.decoder(transform.manifest_params(), DecodeContext(configured=(transform,)))
    assert dec.update(header + segs[0]) == b""  # could still be the last segment
    assert dec.update(segs[1][:1]) == plain[:16]
    bad = segs[2][:5] + bytes([segs[2][5] ^ 1]) + segs[2][6:]
    released, error = released_before_failure(
        transform, header + segs[0] + segs[1] + bad + segs[3], 1
    )
    assert isinstance(error, pgvault.CiphertextError) and error.segment == 2
    assert released == plain[:32]


def test_not_an_encrypted_artifact(key_path: Path) -> None:
    """Plain bytes where an encrypted artifact should be fail on the magic, at once."""
    transform = Aes256Gcm(key_file=key_path)
    dec = Aes256Gcm.decoder(transform.manifest_params(), DecodeContext(configured=(transform,)))
    with pytest.raises(pgvault.CiphertextError, match="not an aes-256-gcm artifact"):
        dec.update(b"PGDMP\x01\x0e\x00")


def test_newer_format_version_asks_for_an_upgrade(key_path: Path) -> None:
    """A header of format version 3 is refused with a message to upgrade, not as tampering."""
    transform = Aes256Gcm(key_file=key_path)
    blob = encrypt(transform, b"data")
    with pytest.raises(pgvault.TransformError, match=r"version 3 is newer.*upgrade pgvault"):
        decrypt(transform, blob[:8] + b"\x03" + blob[9:])


def test_hostile_header_cannot_exhaust_memory(
    key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segment sizes over 64 MiB and scrypt costs over 1 GiB in a header are refused."""
    transform = Aes256Gcm(key_file=key_path)
    blob = encrypt(transform, b"data")
    huge = blob[:14] + (MAX_SEGMENT_SIZE + 1).to_bytes(4, "big") + blob[18:]
    with pytest.raises(pgvault.CiphertextError, match="segment size"):
        decrypt(transform, huge)
    monkeypatch.setenv("PGV_TEST_PASS", PASSPHRASE)
    pp = Aes256Gcm(passphrase_env="PGV_TEST_PASS", scrypt_log_n=10)
    pblob = encrypt(pp, b"data")
    greedy = pblob[:58] + bytes([30]) + pblob[59:]  # log_n 30 at r = 8: 1 TiB
    dec = Aes256Gcm.decoder({}, DecodeContext(configured=(pp,)))
    with pytest.raises(pgvault.CiphertextError, match="MiB of memory"):
        dec.update(greedy)


# Keys


def test_wrong_key_names_both_key_ids(key_path: Path, tmp_path: Path) -> None:
    """Decoding with another key fails before any byte, naming the needed and the given key ids."""
    other = tmp_path / "other.key"
    other_id = keys.write_key_file(other)
    params = Aes256Gcm(key_file=key_path).manifest_params()
    with pytest.raises(pgvault.KeyMismatchError) as info:
        Aes256Gcm.decoder(params, DecodeContext(configured=(Aes256Gcm(key_file=other),)))
    assert info.value.needed == (keys.key_id(MASTER),)
    assert info.value.given == (other_id,)
    assert str(info.value.for_backup("B")) == (
        f"backup B was encrypted with key id {keys.key_id(MASTER)}; the key given has id {other_id}"
    )


def test_no_key_at_all_says_how_to_give_one(key_path: Path) -> None:
    """A decoder with no encryption transform configured and no --identity says what is missing."""
    params = Aes256Gcm(key_file=key_path).manifest_params()
    with pytest.raises(pgvault.MissingKeyError, match="no key file was given: set key_file"):
        Aes256Gcm.decoder(params, DecodeContext())


def test_rotation_reads_old_keys_by_key_id(key_path: Path, tmp_path: Path) -> None:
    """A config with a new key_file and the old one in old_key_files reads both generations."""
    old = Aes256Gcm(key_file=key_path)
    old_blob = encrypt(old, b"old data")
    new_key = tmp_path / "new.key"
    keys.write_key_file(new_key)
    rotated = Aes256Gcm(key_file=new_key, old_key_files=(key_path,))
    new_blob = encrypt(rotated, b"new data")
    assert rotated.manifest_params()["key_id"] != old.manifest_params()["key_id"]
    context = DecodeContext(configured=(rotated,))
    assert decrypt(old, old_blob, context=context) == b"old data"
    assert decrypt(rotated, new_blob, context=context) == b"new data"


def test_missing_old_key_file_is_mentioned_when_no_key_fits(key_path: Path, tmp_path: Path) -> None:
    """When no key fits, configured keys that could not be loaded are named in the message."""
    new_key = tmp_path / "new.key"
    keys.write_key_file(new_key)
    rotated = Aes256Gcm(key_file=new_key, old_key_files=(tmp_path / "gone.key",))
    params = Aes256Gcm(key_file=key_path).manifest_params()
    with pytest.raises(pgvault.KeyMismatchError, match=r"gone.key: key file not found"):
        Aes256Gcm.decoder(params, DecodeContext(configured=(rotated,)))


def test_wrong_passphrase_names_both_key_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong passphrase is reported as a key id mismatch, not as corruption."""
    monkeypatch.setenv("PGV_TEST_PASS", PASSPHRASE)
    transform = Aes256Gcm(passphrase_env="PGV_TEST_PASS", scrypt_log_n=10)
    blob = encrypt(transform, b"data")
    params = transform.manifest_params()
    monkeypatch.setenv("PGV_TEST_PASS", "Tr0ub4dor&3")
    reader = Aes256Gcm(passphrase_env="PGV_TEST_PASS", scrypt_log_n=10)
    with pytest.raises(
        pgvault.KeyMismatchError, match=f"encrypted with key id {params['key_id']};"
    ):
        Aes256Gcm.decoder(params, DecodeContext(configured=(reader,)))
    dec = Aes256Gcm.decoder({}, DecodeContext(configured=(reader,)))
    with pytest.raises(pgvault.KeyMismatchError):
        dec.update(blob)


def test_passphrase_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A passphrase typed with a combining accent opens a backup made with the precomposed one."""
    monkeypatch.setenv("PGV_TEST_PASS", "caf\u00e9 au lait")
    blob = encrypt(Aes256Gcm(passphrase_env="PGV_TEST_PASS", scrypt_log_n=10), b"data")
    monkeypatch.setenv("PGV_TEST_PASS", "cafe\u0301 au lait")
    reader = Aes256Gcm(passphrase_env="PGV_TEST_PASS", scrypt_log_n=10)
    dec = Aes256Gcm.decoder({}, DecodeContext(configured=(reader,)))
    assert dec.update(blob) + dec.finish() == b"data"


def test_recipients_need_a_matching_identity(tmp_path: Path, identity_path: Path) -> None:
    """A recipients artifact opens with any recipient's identity, and names ids when none fits."""
    other, other_pub = keys.write_identity(tmp_path / "other")
    transform = Aes256Gcm(recipients=(str(IDENTITY.recipient),), recipient_files=(other_pub,))
    blob = encrypt(transform, b"for two")
    params = transform.manifest_params()
    assert params["key_ids"] == [IDENTITY.key_id, other.key_id]
    for ident in (identity_path, tmp_path / "other"):
        assert decrypt(transform, blob, context=DecodeContext(identities=(ident,))) == b"for two"
    with pytest.raises(pgvault.MissingKeyError, match="no identity was given: pass --identity"):
        Aes256Gcm.decoder(params, DecodeContext(configured=(transform,)))
    stranger, _ = keys.write_identity(tmp_path / "stranger")
    with pytest.raises(pgvault.KeyMismatchError) as info:
        Aes256Gcm.decoder(params, DecodeContext(identities=(tmp_path / "stranger",)))
    assert str(info.value) == (
        f"the artifact was encrypted for key ids {IDENTITY.key_id}, {other.key_id}; "
        f"the identity given has id {stranger.key_id}"
    )


def test_tampered_recipient_stanza_is_detected(identity_path: Path) -> None:
    """A changed wrapped key in the header fails as tampering, not as a wrong identity."""
    transform = Aes256Gcm(recipients=(str(IDENTITY.recipient),))
    blob = bytearray(encrypt(transform, b"data"))
    blob[51 + 8 + 32 + 3] ^= 1  # inside the wrapped key
    with pytest.raises(pgvault.CiphertextError, match="does not open"):
        decrypt(transform, bytes(blob), context=DecodeContext(identities=(identity_path,)))


def test_per_artifact_salt_is_recorded_and_old_manifests_still_load() -> None:
    """transform_params round-trips through manifest JSON and is absent, not empty, without it."""
    record = pgvault.ArtifactRecord(
        path="db.aes",
        stream="db",
        role="main",
        size=1,
        raw_size=1,
        digests={"sha256": "0"},
        transform_params=({}, {"salt": "c2FsdA=="}),
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    manifest = pgvault.Manifest(
        backup_id="B",
        name="n",
        started_at=now,
        finished_at=now,
        pgvault_version="0",
        source={"type": "files"},
        transforms=(),
        artifacts=(record,),
    )
    again = pgvault.Manifest.from_json(manifest.to_json())
    assert again.artifacts[0].transform_params == ({}, {"salt": "c2FsdA=="})
    bare = pgvault.Manifest(
        backup_id="B",
        name="n",
        started_at=now,
        finished_at=now,
        pgvault_version="0",
        source={"type": "files"},
        transforms=(),
        artifacts=(pgvault.ArtifactRecord("a", "a", "main", 1, 1, {"sha256": "0"}),),
    )
    data = json.loads(bare.to_json())
    assert "transform_params" not in data["artifacts"][0]
    assert pgvault.Manifest.from_json(json.dumps(data)).artifacts[0].transform_params == ()


def test_manifest_params_hold_no_secret(key_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recorded parameters name algorithm, segment size and key id, never key or passphrase."""
    params = Aes256Gcm(key_file=key_path, segment_size=4096).manifest_params()
    assert params == {
        "format_version": 2,
        "algorithm": "AES-256-GCM",
        "key_derivation": "HKDF-SHA256",
        "segment_size": 4096,
        "key_source": "key_file",
        "key_id": keys.key_id(MASTER),
    }
    monkeypatch.setenv("PGV_TEST_PASS", PASSPHRASE)
    pp = Aes256Gcm(passphrase_env="PGV_TEST_PASS", scrypt_log_n=10).manifest_params()
    text = json.dumps(pp)
    assert PASSPHRASE not in text and "PGV_TEST_PASS" not in text
    assert pp["kdf"]["name"] == "scrypt" and pp["kdf"]["log_n"] == 10


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "exactly one key source.*got none"),
        ({"key_file": "k", "passphrase_env": "P"}, "got key_file and passphrase_env"),
        ({"recipients": ["age1xyz"]}, r"recipients\[0\]: not an X25519 public key"),
        ({"key_file": "k", "segment_size": 0}, "segment_size"),
    ],
    ids=["none", "two", "bad-recipient", "segment-size"],
)
def test_config_mistakes_name_the_transform(
    tmp_path: Path, options: dict[str, Any], match: str
) -> None:
    """A wrong aes-256-gcm table is a config error naming the file and the transform."""
    data = {
        "name": "t",
        "source": {"type": "files", "paths": ["."]},
        "sink": {"type": "local", "path": str(tmp_path / "vault")},
        "transform": [{"type": "aes-256-gcm", **options}],
    }
    with pytest.raises(pgvault.ConfigError, match=match) as info:
        pgvault.parse_config(data, path=Path("p.toml"))
    assert "p.toml: transform[0]" in str(info.value)


# Real backups


@pytest.fixture(scope="module")
def sentinel_db(pg_cluster: PostgresCluster) -> str:
    """A database whose rows carry a recognisable sentinel string, many times over."""
    name = "encrypt_sentinel"
    if name not in pg_cluster.databases():
        pg_cluster.create_database(name)
        pg_cluster.execute(
            "CREATE TABLE people (id int PRIMARY KEY, cpf text, note text);"
            "INSERT INTO people SELECT i, 'SENTINEL-CPF-' || lpad(i::text, 6, '0'), "
            "repeat('pii ', 50) "
            "FROM generate_series(1, 20000) AS i;",
            name,
        )
    return name


def stored_files(config_path: Path) -> list[Path]:
    root = Path(pgvault.load_config(config_path).sink.describe())
    return [p for p in root.rglob("*") if p.is_file()]


def encryption_options(
    source: str, tmp_path: Path
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """aes-256-gcm options for key source ``source``, the CLI args to read with, and the env."""
    if source == "key_file":
        keys.write_key_file(tmp_path / "backup.key")
        return {"key_file": str(tmp_path / "backup.key")}, [], {}
    if source == "passphrase":
        return {"passphrase_env": "PGV_E2E_PASS"}, [], {"PGV_E2E_PASS": PASSPHRASE}
    _identity, pub = keys.write_identity(tmp_path / "restore-id")
    return {"recipient_files": [str(pub)]}, ["--identity", str(tmp_path / "restore-id")], {}


def cli_ok(*args: Any, env: dict[str, str] | None = None) -> str:
    result = pgvault_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("source", ["key_file", "passphrase", "recipients"])
def test_round_trip_through_backup_verify_and_restore(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker, tmp_path: Path, source: str
) -> None:
    """For each key source, run, verify --deep and restore on a real cluster give identical data."""
    options, read_args, env = encryption_options(source, tmp_path)
    config = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)},
        [{"type": "zstd", "level": 3}, {"type": "aes-256-gcm", "segment_size": 65536, **options}],
    )
    backup_id = cli_ok("run", config, env=env).splitlines()[-1]
    manifest = json.loads(cli_ok("show", config, backup_id, env=env))
    enc = manifest["transforms"][1]
    assert enc["type"] == "aes-256-gcm" and enc["algorithm"] == "AES-256-GCM"
    assert enc["segment_size"] == 65536 and enc["key_source"] == source
    assert enc.get("key_id") or enc.get("key_ids")
    for art in manifest["artifacts"]:
        assert art["path"].endswith(".zst.aes")
        assert len(base64.b64decode(art["transform_params"][1]["salt"])) == 32
    assert "OK" in cli_ok("verify", config, backup_id, "--deep", *read_args, env=env)
    target = f"restored_enc_{source}"
    pg_cluster.drop_database(target)
    cli_ok("restore", config, backup_id, "--target-db", target, *read_args, env=env)
    assert snapshot_database(pg_cluster, target) == snapshot_database(pg_cluster, rich_db)
    pg_cluster.drop_database(target)


def test_sentinel_never_appears_in_stored_bytes(
    pg_cluster: PostgresCluster, sentinel_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """The plain dump holds the sentinel; with encryption, no stored file (nor manifest) does."""
    keys.write_key_file(tmp_path / "k")
    source = {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db), "format": "plain"}
    plain = make_config(source, [], sink={"type": "local", "path": str(tmp_path / "plain")})
    cli_ok("run", plain)
    assert any(b"SENTINEL-CPF-" in p.read_bytes() for p in stored_files(plain))
    encrypted = make_config(
        source,
        [{"type": "aes-256-gcm", "key_file": str(tmp_path / "k")}],
        sink={"type": "local", "path": str(tmp_path / "encrypted")},
    )
    cli_ok("run", encrypted)
    files = stored_files(encrypted)
    assert len(files) >= 2
    key_text = (tmp_path / "k").read_text().strip()
    for path in files:
        data = path.read_bytes()
        assert b"SENTINEL-CPF-" not in data, path
        assert b"pii pii" not in data, path
        assert key_text.encode() not in data, path
        assert keys.load_key_file(tmp_path / "k") not in data, path


def test_wrong_key_fails_restore_before_creating_the_database(
    pg_cluster: PostgresCluster, sentinel_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """Restore with another key: one line naming the backup and both key ids; no database."""
    good_id = keys.write_key_file(tmp_path / "good.key")
    wrong_id = keys.write_key_file(tmp_path / "wrong.key")
    source = {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)}
    writer = make_config(source, [{"type": "aes-256-gcm", "key_file": str(tmp_path / "good.key")}])
    reader = make_config(source, [{"type": "aes-256-gcm", "key_file": str(tmp_path / "wrong.key")}])
    backup_id = cli_ok("run", writer).splitlines()[-1]
    result = pgvault_cli("restore", reader, backup_id, "--target-db", "never_created_wrong_key")
    assert result.returncode == 1
    assert result.stderr == (
        f"pgvault: error: backup {backup_id} was encrypted with key id {good_id}; "
        f"the key given has id {wrong_id}\n"
    )
    assert "never_created_wrong_key" not in pg_cluster.databases()
    verify = pgvault_cli("verify", reader, backup_id, "--deep")
    assert verify.returncode == 1 and f"encrypted with key id {good_id}" in verify.stderr


def test_wrong_passphrase_and_no_passphrase(
    pg_cluster: PostgresCluster, sentinel_db: str, make_config: ConfigMaker
) -> None:
    """A wrong passphrase names the key ids; an unset variable says no passphrase was given."""
    config = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)},
        [{"type": "aes-256-gcm", "passphrase_env": "PGV_E2E_PASS", "scrypt_log_n": 12}],
    )
    backup_id = cli_ok("run", config, env={"PGV_E2E_PASS": PASSPHRASE}).splitlines()[-1]
    wrong = pgvault_cli(
        "restore",
        config,
        backup_id,
        "--target-db",
        "never_created_pp",
        env={"PGV_E2E_PASS": "not it"},
    )
    assert wrong.returncode == 1
    assert f"backup {backup_id} was encrypted with key id " in wrong.stderr
    assert "not it" not in wrong.stderr and wrong.stderr.count("\n") == 1
    missing = pgvault_cli(
        "restore", config, backup_id, "--target-db", "never_created_pp", env={"PGV_E2E_PASS": ""}
    )
    assert missing.returncode == 1
    assert "no passphrase was given" in missing.stderr
    assert "PGV_E2E_PASS (passphrase_env) is empty" in missing.stderr
    assert "never_created_pp" not in pg_cluster.databases()


def test_no_key_configured_fails_before_writing(
    pg_cluster: PostgresCluster, sentinel_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """Restoring an encrypted backup with a config that has no key says so; nothing is created."""
    keys.write_key_file(tmp_path / "k")
    source = {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)}
    writer = make_config(source, [{"type": "aes-256-gcm", "key_file": str(tmp_path / "k")}])
    backup_id = cli_ok("run", writer).splitlines()[-1]
    keyless = make_config(source, [])
    result = pgvault_cli("restore", keyless, backup_id, "--target-db", "never_created_no_key")
    assert result.returncode == 1
    assert f"backup {backup_id} is encrypted with key id" in result.stderr
    assert "no key file was given" in result.stderr
    assert "never_created_no_key" not in pg_cluster.databases()


def test_recipient_backup_needs_its_identity(
    pg_cluster: PostgresCluster, sentinel_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """A host with only the public key backs up; restore without or with a wrong identity fails."""
    identity, pub = keys.write_identity(tmp_path / "ops")
    stranger, _ = keys.write_identity(tmp_path / "stranger")
    config = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)},
        [{"type": "zstd"}, {"type": "aes-256-gcm", "recipients": [pub.read_text().strip()]}],
    )
    backup_id = cli_ok("run", config).splitlines()[-1]
    none = pgvault_cli("restore", config, backup_id, "--target-db", "never_created_rcpt")
    assert none.returncode == 1
    assert f"backup {backup_id} is encrypted for key id {identity.key_id}" in none.stderr
    assert "--identity" in none.stderr
    wrong = pgvault_cli(
        "restore",
        config,
        backup_id,
        "--target-db",
        "never_created_rcpt",
        "--identity",
        tmp_path / "stranger",
    )
    assert wrong.returncode == 1
    assert wrong.stderr == (
        f"pgvault: error: backup {backup_id} was encrypted for key id {identity.key_id}; "
        f"the identity given has id {stranger.key_id}\n"
    )
    assert "never_created_rcpt" not in pg_cluster.databases()
    assert pgvault_cli("verify", config, backup_id, "--deep").returncode == 1
    cli_ok("verify", config, backup_id, "--deep", "--identity", tmp_path / "ops")


def test_key_rotation_keeps_every_backup_restorable(
    pg_cluster: PostgresCluster, sentinel_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """After rotating, new backups use the new key; old ones still verify via old_key_files."""
    old_id = keys.write_key_file(tmp_path / "2025.key")
    new_id = keys.write_key_file(tmp_path / "2026.key")
    source = {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)}
    before = make_config(source, [{"type": "aes-256-gcm", "key_file": str(tmp_path / "2025.key")}])
    first = pgvault.run(pgvault.load_config(before))
    after = make_config(
        source,
        [
            {
                "type": "aes-256-gcm",
                "key_file": str(tmp_path / "2026.key"),
                "old_key_files": [str(tmp_path / "2025.key")],
            }
        ],
    )
    config = pgvault.load_config(after)
    second = pgvault.run(config)
    assert first.transforms[0].params["key_id"] == old_id
    assert second.transforms[0].params["key_id"] == new_id
    vault = pgvault.Vault.from_config(config)
    context = DecodeContext(configured=config.transforms)
    for manifest in (first, second):
        assert vault.verify(manifest, deep=True, context=context).ok
    pgvault.restore(config, first.backup_id, target_db="restored_rotated")
    assert pg_cluster.execute("SELECT count(*) FROM people", "restored_rotated") == [(20000,)]
    pg_cluster.drop_database("restored_rotated")
    only_new = pgvault.load_config(
        make_config(source, [{"type": "aes-256-gcm", "key_file": str(tmp_path / "2026.key")}])
    )
    report = vault.verify(first, deep=True, context=DecodeContext(configured=only_new.transforms))
    assert not report.ok
    assert (
        f"encrypted with key id {old_id}; the key given has id {new_id}"
        in report.problems[0].message
    )


def backup_folder(config_path: Path, backup_id: str) -> Path:
    """The local vault folder of backup ``backup_id``."""
    root = Path(pgvault.load_config(config_path).sink.describe())
    return next(p for p in root.rglob(backup_id) if p.is_dir())


def reseal_manifest(config_path: Path, backup_id: str, artifact: str, data: bytes) -> None:
    """Store ``data`` as ``artifact`` and rewrite the manifest's size and digests to match, as an
    attacker who holds the bucket can: only the encryption can catch it then."""
    folder = backup_folder(config_path, backup_id)
    (folder / artifact).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["path"] == artifact:
            art["size"] = len(data)
            art["digests"] = {"sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", ["flip", "swap", "truncate"])
def test_tampered_artifact_is_caught_by_verify_and_restore(
    pg_cluster: PostgresCluster,
    sentinel_db: str,
    make_config: ConfigMaker,
    tmp_path: Path,
    damage: str,
) -> None:
    """Even with the manifest rewritten to match, verify and restore name the artifact and segment,
    and restore leaves no database behind."""
    keys.write_key_file(tmp_path / "k")
    config = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)},
        [{"type": "aes-256-gcm", "key_file": str(tmp_path / "k"), "segment_size": 4096}],
    )
    manifest = pgvault.run(pgvault.load_config(config))
    art = manifest.artifacts[0].path
    stored = next(p for p in stored_files(config) if p.name == art).read_bytes()
    header, seal = int.from_bytes(stored[10:14], "big"), 4096 + 16  # its length field
    assert len(stored) > header + 6 * seal
    if damage == "flip":
        pos = header + 3 * seal + 100
        data, segment = stored[:pos] + bytes([stored[pos] ^ 0x20]) + stored[pos + 1 :], 3
    elif damage == "swap":
        s3, s4 = (stored[header + i * seal : header + (i + 1) * seal] for i in (3, 4))
        data, segment = stored[: header + 3 * seal] + s4 + s3 + stored[header + 5 * seal :], 3
    else:
        data, segment = stored[: header + 5 * seal], 5
    reseal_manifest(config, manifest.backup_id, art, data)
    verify = pgvault_cli("verify", config, manifest.backup_id, "--deep")
    assert verify.returncode == 1
    assert f"artifact {art}: segment {segment}" in verify.stderr
    restore = pgvault_cli(
        "restore", config, manifest.backup_id, "--target-db", f"never_kept_{damage}"
    )
    assert restore.returncode == 1
    assert restore.stderr.count("\n") == 1
    assert f"{art}: segment {segment}" in restore.stderr
    assert f"never_kept_{damage}" not in pg_cluster.databases()


def moved(to: str, backup: str, sealed_for: str, sealed_in: str) -> str:
    """The one line that says artifact ``to`` of ``backup`` holds another artifact's bytes."""
    return (
        f"artifact {to} of backup {backup} was encrypted for artifact {sealed_for} of backup "
        f"{sealed_in}: it was moved or swapped"
    )


def test_an_older_backups_artifact_copied_over_a_newer_one_is_refused(
    pg_cluster: PostgresCluster, sentinel_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """An older backup's artifact stored over a newer backup's (same key, manifest rewritten to
    match): verify --deep and restore name the artifact and both backups; no database is left."""
    keys.write_key_file(tmp_path / "k")
    config_path = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)},
        [{"type": "zstd"}, {"type": "aes-256-gcm", "key_file": str(tmp_path / "k")}],
    )
    config = pgvault.load_config(config_path)
    old, new = pgvault.run(config), pgvault.run(config)
    art = new.artifacts[0].path
    assert old.artifacts[0].path == art
    old_bytes = (backup_folder(config_path, old.backup_id) / art).read_bytes()
    reseal_manifest(config_path, new.backup_id, art, old_bytes)
    message = moved(art, new.backup_id, art, old.backup_id)

    vault = pgvault.Vault.from_config(config)
    context = DecodeContext(configured=config.transforms)
    report = vault.verify(vault.manifest(new.backup_id), deep=True, context=context)
    assert [(p.artifact, p.message) for p in report.problems] == [(art, message)]
    with pytest.raises(pgvault.RestoreError) as info:
        pgvault.restore(config, new.backup_id, target_db="never_kept_moved")
    # Found where the restore reads the archive's table of contents, before it creates anything.
    assert str(info.value).endswith(f"did not start, nothing was changed: {message}")
    assert "never_kept_moved" not in pg_cluster.databases()
    restore = pgvault_cli("restore", config_path, new.backup_id, "--target-db", "never_kept_moved")
    assert restore.returncode == 1
    assert restore.stderr.count("\n") == 1 and message in restore.stderr
    assert "never_kept_moved" not in pg_cluster.databases()


def test_artifacts_swapped_within_a_split_backup_are_refused(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """The main and a data archive of a jobs = 3 backup swapped (manifest rewritten to match):
    verify --deep names each, and restore fails naming the first one read; no database is left."""
    keys.write_key_file(tmp_path / "k")
    config_path = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "jobs": 3},
        [{"type": "zstd"}, {"type": "aes-256-gcm", "key_file": str(tmp_path / "k")}],
    )
    config = pgvault.load_config(config_path)
    manifest = pgvault.run(config)
    main = next(a.path for a in manifest.artifacts if a.role == "main")
    data = next(a.path for a in manifest.artifacts if a.role == "data")
    folder = backup_folder(config_path, manifest.backup_id)
    main_bytes, data_bytes = (folder / main).read_bytes(), (folder / data).read_bytes()
    reseal_manifest(config_path, manifest.backup_id, main, data_bytes)
    reseal_manifest(config_path, manifest.backup_id, data, main_bytes)

    bid = manifest.backup_id
    vault = pgvault.Vault.from_config(config)
    context = DecodeContext(configured=config.transforms)
    report = vault.verify(vault.manifest(bid), deep=True, context=context)
    assert sorted((p.artifact, p.message) for p in report.problems) == sorted(
        [(main, moved(main, bid, data, bid)), (data, moved(data, bid, main, bid))]
    )
    with pytest.raises(pgvault.RestoreError) as info:
        pgvault.restore(config, bid, target_db="never_kept_swapped")
    assert str(info.value).endswith(moved(main, bid, data, bid))
    assert "never_kept_swapped" not in pg_cluster.databases()


def test_version_2_and_version_1_artifacts_restore_through_the_vault(
    pg_cluster: PostgresCluster, sentinel_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """A new backup's artifacts are version 2, bound to their backup and name, and restore; the
    same backup as pgvault wrote it before version 2 (unbound) still verifies and restores."""
    keys.write_key_file(tmp_path / "k")
    config_path = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)},
        [{"type": "aes-256-gcm", "key_file": str(tmp_path / "k"), "segment_size": 4096}],
    )
    config = pgvault.load_config(config_path)
    manifest = pgvault.run(config)
    vault = pgvault.Vault.from_config(config)
    context = DecodeContext(configured=config.transforms)
    folder = backup_folder(config_path, manifest.backup_id)
    plain = {}
    for art in manifest.artifacts:
        stored = (folder / art.path).read_bytes()
        header = Header.decode(stored[: int.from_bytes(stored[10:14], "big")])
        assert stored[8] == 2
        assert header.binding == ArtifactBinding(manifest.backup_id, art.path)
        plain[art.path] = b"".join(vault.decoded(manifest, art.path, context))
    pgvault.restore(config, manifest.backup_id, target_db="restored_v2")
    assert pg_cluster.execute("SELECT count(*) FROM people", "restored_v2") == [(20000,)]
    pg_cluster.drop_database("restored_v2")

    master = keys.load_key_file(tmp_path / "k")
    for path, data in plain.items():
        v1 = reference_encrypt_v1(data, master, 4096)
        reseal_manifest(config_path, manifest.backup_id, path, v1)
    old = vault.manifest(manifest.backup_id)
    assert all((folder / a.path).read_bytes()[8] == 1 for a in old.artifacts)
    assert vault.verify(old, deep=True, context=context).ok
    pgvault.restore(config, manifest.backup_id, target_db="restored_v1")
    assert pg_cluster.execute("SELECT count(*) FROM people", "restored_v1") == [(20000,)]
    pg_cluster.drop_database("restored_v1")


def test_secrets_never_reach_logs_or_output(
    pg_cluster: PostgresCluster,
    sentinel_db: str,
    make_config: ConfigMaker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With --debug, and every pgvault logger at DEBUG, no key or passphrase is ever printed."""
    keys.write_key_file(tmp_path / "k")
    key = keys.load_key_file(tmp_path / "k")
    secrets = [PASSPHRASE, base64.b64encode(key).decode(), key.hex()]
    source = {"type": "pg_dump", "dsn": pg_cluster.dsn(sentinel_db)}
    for options, env in (
        ({"key_file": str(tmp_path / "k")}, {}),
        ({"passphrase_env": "PGV_E2E_PASS", "scrypt_log_n": 12}, {"PGV_E2E_PASS": PASSPHRASE}),
    ):
        config = make_config(source, [{"type": "aes-256-gcm", **options}])
        run = pgvault_cli("run", config, "--debug", env=env)
        assert run.returncode == 0, run.stderr
        backup_id = run.stdout.splitlines()[-1]
        outputs = [run.stdout + run.stderr]
        for args in (("verify", config, backup_id, "--deep"), ("show", config, backup_id)):
            result = pgvault_cli(*args, "--debug", env=env)
            outputs.append(result.stdout + result.stderr)
        failing = pgvault_cli(
            "restore",
            config,
            backup_id,
            "--target-db",
            "x",
            "--debug",
            env={"PGV_E2E_PASS": "wrong " + PASSPHRASE},
        )
        outputs.append(failing.stdout + failing.stderr)
        for text in outputs:
            for secret in secrets:
                assert secret not in text
    monkeypatch.setenv("PGV_E2E_PASS", PASSPHRASE)
    with caplog.at_level(logging.DEBUG, logger="pgvault"):
        pgvault.run(pgvault.load_config(config))
    for secret in secrets:
        assert secret not in caplog.text
