"""The on-disk format of an ``aes-256-gcm`` artifact: header, segments, artifact binding.

An encrypted artifact is a self-describing header, then the plaintext cut into fixed-size
segments, each sealed with AES-256-GCM under a key derived for this artifact alone (HKDF-SHA256
over the master key and a random salt: :func:`payload_key`). A segment's nonce is its index and
a last-segment flag (:func:`nonce`), and every segment authenticates the whole header. Since
format version 2 the header also names the backup and artifact it was written for (an
:class:`~pgvault.transforms.api.ArtifactBinding`); version 1 headers, which name neither, are
still read.

This module is the bytes only: what a header holds and how it is laid out, and how a segment's
key and nonce are formed. Sealing and opening the stream is the codec's
(:mod:`pgvault.transforms.encrypt`); finding the key a header asks for is
:mod:`pgvault.transforms.keyring`'s. The format is specified in ``docs/encryption-format.md`` and
pinned by known-answer tests in ``tests/transforms/test_encrypt.py``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
from collections.abc import Mapping
from typing import Any

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pgvault.exceptions import CiphertextError, TransformError
from pgvault.transforms import keys
from pgvault.transforms.api import ArtifactBinding
from pgvault.transforms.keys import KEY_ID_SIZE, KEY_SIZE, WRAPPED_KEY_SIZE

MAGIC = b"PGVENC\r\n"
"""First 8 bytes of every encrypted artifact (the CR LF catches text-mode mangling)."""

FORMAT_VERSION = 2
"""The version pgvault writes; it reads every version from 1 up to this one."""
DEFAULT_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 26
"""Largest segment a decoder accepts: it buffers one whole segment, so this bounds its memory."""

TAG_SIZE = 16
SALT_SIZE = 32
MAX_RECIPIENTS = 255
MAX_HEADER_SIZE = 1 << 16

# magic, version, key source, header length, segment size: all big-endian.
_FIXED = struct.Struct(">8sBBII")
_BINDING_LENGTH = struct.Struct(">H")
_STANZA_SIZE = KEY_ID_SIZE + KEY_SIZE + WRAPPED_KEY_SIZE
_PAYLOAD_INFO = b"pgvault aes-256-gcm v1 payload"

FIXED_SIZE = _FIXED.size
"""Bytes of the header's fixed part (magic to segment size), enough for :meth:`Header.length`."""


class KeySource(enum.IntEnum):
    """Where an artifact's master key comes from; byte 9 of the header."""

    KEY_FILE = 1
    PASSPHRASE = 2
    RECIPIENTS = 3

    @property
    def label(self) -> str:
        """The name the manifest records (``key_file``, ``passphrase``, ``recipients``)."""
        return self.name.lower()


@attrs.frozen
class ScryptParams:
    """How a passphrase was stretched: scrypt with cost ``2**log_n``, block size ``r``,
    parallelism ``p`` and ``salt``."""

    salt: bytes
    log_n: int
    r: int = keys.SCRYPT_R
    p: int = keys.SCRYPT_P

    def check(self) -> None:
        """Refuse parameters no pgvault writes and that would exhaust memory (a hostile header)."""
        if not (1 <= self.log_n <= 40 and 1 <= self.r <= 255 and 1 <= self.p <= 255):
            raise CiphertextError("the encryption header holds invalid scrypt parameters")
        need = keys.scrypt_memory(self.log_n, self.r)
        if need > keys.MAX_SCRYPT_MEMORY:
            raise CiphertextError(
                f"the encryption header asks scrypt for {need >> 20} MiB of memory, more than "
                f"the {keys.MAX_SCRYPT_MEMORY >> 20} MiB pgvault allows (damaged or hostile header)"
            )

    def derive(self, passphrase: bytes) -> bytes:
        """The master key ``passphrase`` stretches to under these parameters."""
        return keys.derive_passphrase_key(passphrase, self.salt, self.log_n, self.r, self.p)

    def to_manifest(self) -> dict[str, Any]:
        """The public form recorded in the manifest."""
        return {
            "name": "scrypt",
            "log_n": self.log_n,
            "r": self.r,
            "p": self.p,
            "salt": b64(self.salt),
        }


@attrs.frozen
class Stanza:
    """The artifact's file key, wrapped for one X25519 recipient."""

    key_id: bytes
    ephemeral: bytes
    wrapped: bytes


@attrs.frozen
class KeySpec:
    """Which key opens an artifact: its source and key id(s), and scrypt's parameters if any."""

    source: KeySource
    key_ids: tuple[str, ...]
    scrypt: ScryptParams | None = None


@attrs.frozen
class Header:
    """The header of an encrypted artifact (see ``docs/encryption-format.md`` for its bytes)."""

    source: KeySource
    segment_size: int
    salt: bytes
    key_id: bytes = b""
    """The master key's id (key file and passphrase sources)."""
    scrypt: ScryptParams | None = None
    stanzas: tuple[Stanza, ...] = ()
    binding: ArtifactBinding | None = None
    """Which artifact of which backup this one was written for (``None``: not known to the
    writer, or a version 1 header)."""

    @property
    def spec(self) -> KeySpec:
        """Which key opens this artifact."""
        if self.source is KeySource.RECIPIENTS:
            return KeySpec(self.source, tuple(s.key_id.hex() for s in self.stanzas))
        return KeySpec(self.source, (self.key_id.hex(),), self.scrypt)

    def encode(self) -> bytes:
        """The header's bytes in the current format version, exactly as stored (and authenticated
        by every segment)."""
        body = [self.salt]
        if self.source is KeySource.RECIPIENTS:
            body.append(bytes([len(self.stanzas)]))
            body += [s.key_id + s.ephemeral + s.wrapped for s in self.stanzas]
        else:
            body.append(self.key_id)
            if self.source is KeySource.PASSPHRASE:
                assert self.scrypt is not None
                s = self.scrypt
                body.append(bytes([s.log_n, s.r, s.p]) + s.salt)
        binding = self.binding.canonical() if self.binding is not None else b""
        total = _FIXED.size + sum(map(len, body)) + _BINDING_LENGTH.size + len(binding)
        if total > MAX_HEADER_SIZE:
            # Readers refuse a longer header: better to fail the backup than write it unreadable.
            assert self.binding is not None
            raise TransformError(
                f"artifact {self.binding.path} of backup {self.binding.backup_id}: its name makes "
                f"the encryption header {total} bytes, more than the {MAX_HEADER_SIZE} allowed"
            )
        body += [_BINDING_LENGTH.pack(len(binding)), binding]
        fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, self.source, total, self.segment_size)
        return fixed + b"".join(body)

    @staticmethod
    def length(prefix: bytes) -> int | None:
        """The header's total length, once ``prefix`` holds its fixed part (else ``None``).

        Checks the magic and version as soon as they are there, so a file that is not an
        encrypted artifact fails at once rather than after a segment's worth of bytes.
        """
        if len(prefix) >= len(MAGIC) and prefix[: len(MAGIC)] != MAGIC:
            raise CiphertextError(
                "not an aes-256-gcm artifact: its first bytes are not pgvault's encryption "
                "header (it was not encrypted by pgvault, or its start is damaged)"
            )
        if len(prefix) < _FIXED.size:
            return None
        _magic, version, _source, total, _segment = _FIXED.unpack_from(prefix)
        if not 1 <= version <= FORMAT_VERSION:
            if version > FORMAT_VERSION:
                raise TransformError(
                    f"encryption format version {version} is newer than this pgvault reads "
                    f"({FORMAT_VERSION}); upgrade pgvault to read it"
                )
            raise CiphertextError(f"the encryption header is damaged (version {version})")
        if not _FIXED.size + SALT_SIZE < total <= MAX_HEADER_SIZE:
            raise CiphertextError(f"the encryption header is damaged (length {total})")
        return int(total)

    @classmethod
    def decode(cls, raw: bytes) -> Header:
        """Parse a whole header of any version this reads (``raw`` is exactly :meth:`length`
        bytes)."""
        _magic, version, source_byte, _total, segment_size = _FIXED.unpack_from(raw)
        damaged = "the encryption header is damaged"
        try:
            source = KeySource(source_byte)
        except ValueError:
            raise CiphertextError(f"{damaged} (unknown key source {source_byte})") from None
        if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
            raise CiphertextError(f"{damaged} (segment size {segment_size})")
        pos = _FIXED.size
        salt = raw[pos : pos + SALT_SIZE]
        pos += SALT_SIZE
        # The key block runs to the end of a version 1 header; version 2 appends the binding.
        if source is KeySource.RECIPIENTS:
            count = raw[pos]
            end = pos + 1 + count * _STANZA_SIZE
            if count < 1 or end > len(raw) or (version == 1 and end != len(raw)):
                raise CiphertextError(f"{damaged} (recipient list)")
        else:
            end = pos + KEY_ID_SIZE
            if source is KeySource.PASSPHRASE:
                end += 3 + keys.SCRYPT_SALT_SIZE
            if end > len(raw) or (version == 1 and end != len(raw)):
                raise CiphertextError(f"{damaged} (length of the key block)")
        rest = raw[pos:end]
        binding = _decode_binding(raw[end:]) if version >= 2 else None
        if source is KeySource.RECIPIENTS:
            stanzas = []
            eph_end = KEY_ID_SIZE + KEY_SIZE
            for i in range(count):
                s = rest[1 + i * _STANZA_SIZE : 1 + (i + 1) * _STANZA_SIZE]
                stanzas.append(Stanza(s[:KEY_ID_SIZE], s[KEY_ID_SIZE:eph_end], s[eph_end:]))
            return cls(source, segment_size, salt, stanzas=tuple(stanzas), binding=binding)
        scrypt = None
        if source is KeySource.PASSPHRASE:
            log_n, r, p = rest[KEY_ID_SIZE : KEY_ID_SIZE + 3]
            scrypt = ScryptParams(rest[KEY_ID_SIZE + 3 :], log_n, r, p)
            scrypt.check()
        key_id = rest[:KEY_ID_SIZE]
        return cls(source, segment_size, salt, key_id=key_id, scrypt=scrypt, binding=binding)


def _decode_binding(tail: bytes) -> ArtifactBinding | None:
    """The binding field of a version 2 header (everything after the key block)."""
    damaged = CiphertextError("the encryption header is damaged (artifact binding)")
    if len(tail) < _BINDING_LENGTH.size:
        raise damaged
    (length,) = _BINDING_LENGTH.unpack_from(tail)
    if len(tail) != _BINDING_LENGTH.size + length:
        raise damaged
    if not length:
        return None
    try:
        return ArtifactBinding.from_canonical(tail[_BINDING_LENGTH.size :])
    except ValueError:
        raise damaged from None


def payload_key(master: bytes, salt: bytes) -> bytes:
    """The per-artifact AES-256 key: HKDF-SHA256 over the master key, salted with the artifact's
    random salt, so no two artifacts ever share a key (and nonces can simply count)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=_PAYLOAD_INFO)
    return hkdf.derive(master)


def nonce(index: int, last: bool) -> bytes:
    """Segment ``index``'s nonce: the index in 11 big-endian bytes, then 1 if it is the last."""
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def b64(data: bytes) -> str:
    """``data`` in standard base64, as the manifest records salts."""
    return base64.b64encode(data).decode("ascii")


def spec_from_params(params: Mapping[str, Any]) -> KeySpec | None:
    """The key spec a manifest recorded, or ``None`` if it recorded none pgvault understands."""
    try:
        source = KeySource[str(params["key_source"]).upper()]
        if source is KeySource.RECIPIENTS:
            return KeySpec(source, tuple(str(k) for k in params["key_ids"]))
        scrypt = None
        if source is KeySource.PASSPHRASE:
            kdf = params["kdf"]
            salt = base64.b64decode(kdf["salt"], validate=True)
            scrypt = ScryptParams(salt, int(kdf["log_n"]), int(kdf["r"]), int(kdf["p"]))
            scrypt.check()
        return KeySpec(source, (str(params["key_id"]),), scrypt)
    except (KeyError, TypeError, ValueError, binascii.Error, CiphertextError):
        return None
