"""Client-side encryption: the ``aes-256-gcm`` transform, a streaming authenticated format.

An encrypted artifact is a self-describing header, then the plaintext cut into fixed-size
segments, each sealed with AES-256-GCM under a key derived for this artifact alone (HKDF-SHA256
over the master key and a random salt). A segment's nonce is its index and a last-segment flag,
and every segment authenticates the whole header, so reordered, dropped, truncated or appended
segments and a swapped or edited header all fail authentication; a decoder releases a segment
only once its tag has checked out. Since format version 2 the header also names the backup and
artifact it was written for (an :class:`~pgvault.transforms.api.ArtifactBinding`), so an artifact
moved to another backup or swapped with a sibling authenticates but is refused as misplaced;
version 1 artifacts, which name neither, are still read. The master key comes from a key file, a
passphrase (scrypt) or, for X25519 recipients, is a random per-artifact key wrapped for each
recipient, so a backup host holding only public keys writes backups it cannot read.

The byte format is specified in ``docs/encryption-format.md`` and pinned by known-answer tests;
key handling lives in :mod:`pgvault.transforms.keys`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
import os
import struct
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pgvault.exceptions import (
    CiphertextError,
    KeyFileError,
    KeyMismatchError,
    MissingKeyError,
    TransformError,
)
from pgvault.transforms import keys
from pgvault.transforms.api import ArtifactBinding, Codec, DecodeContext, Transform
from pgvault.transforms.keys import KEY_ID_SIZE, KEY_SIZE, WRAPPED_KEY_SIZE, Identity, Recipient

log = logging.getLogger("pgvault.transforms.encrypt")

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

RandBytes = Callable[[int], bytes]
"""Where an encoder gets its randomness: ``os.urandom``, or a fixed stream in known-answer tests."""


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
            "salt": _b64(self.salt),
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


@attrs.define(eq=False)
class _Cache:
    """Key material an :class:`Aes256Gcm` loads once, so every artifact of a backup (and its
    manifest) uses the same key even if a file changes meanwhile."""

    lock: threading.Lock = attrs.field(factory=threading.Lock)
    master: bytes | None = None
    """The key file's key, or the passphrase's scrypt output."""
    scrypt: ScryptParams | None = None
    recipients: tuple[Recipient, ...] | None = None


def _range(low: int, high: int) -> Any:
    return attrs.validators.and_(attrs.validators.ge(low), attrs.validators.le(high))


@attrs.frozen
class Aes256Gcm(Transform):
    """Streaming AES-256-GCM encryption, authenticated segment by segment.

    Exactly one key source encrypts new backups:

    * ``key_file`` — 32 random bytes, raw or base64 (``pgvault keygen --out PATH``);
    * ``passphrase_env`` — the name of an environment variable holding a passphrase, stretched
      with scrypt (cost ``2**scrypt_log_n``, default 2**17 ≈ 128 MiB and a fraction of a second);
    * ``recipients`` (``pgvault-x25519:…`` strings) and/or ``recipient_files`` (``PATH.pub``) —
      X25519 public keys; the host needs no secret, and reading takes ``--identity``.

    For reading, the decoder also tries ``old_key_files``, ``old_passphrase_envs`` and
    ``identity_files`` (key rotation), and whatever ``--identity`` names. ``segment_size`` is the
    plaintext bytes per authenticated segment (default 1 MiB; a decoder buffers one).
    """

    type_name: ClassVar[str] = "aes-256-gcm"
    suffix: ClassVar[str] = ".aes"

    key_file: Path | None = None
    passphrase_env: str | None = None
    recipients: tuple[str, ...] = ()
    recipient_files: tuple[Path, ...] = ()
    old_key_files: tuple[Path, ...] = ()
    old_passphrase_envs: tuple[str, ...] = ()
    identity_files: tuple[Path, ...] = ()
    segment_size: int = attrs.field(
        default=DEFAULT_SEGMENT_SIZE, validator=_range(1, MAX_SEGMENT_SIZE)
    )
    scrypt_log_n: int = attrs.field(default=17, validator=_range(10, 20))
    _cache: _Cache = attrs.field(init=False, factory=_Cache, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        chosen = [
            name
            for name, given in (
                ("key_file", self.key_file is not None),
                ("passphrase_env", self.passphrase_env is not None),
                ("recipients", bool(self.recipients or self.recipient_files)),
            )
            if given
        ]
        if len(chosen) != 1:
            got = "none" if not chosen else " and ".join(chosen)
            raise ValueError(
                "aes-256-gcm needs exactly one key source to encrypt with: key_file, "
                f"passphrase_env, or recipients/recipient_files (got {got})"
            )
        if self.passphrase_env == "" or "" in self.old_passphrase_envs:
            raise ValueError("a passphrase variable name is empty")
        for i, text in enumerate(self.recipients):
            try:
                keys.parse_recipient(text, where=f"recipients[{i}]")
            except KeyFileError as exc:
                raise ValueError(str(exc)) from None
        if len(self.recipients) + len(self.recipient_files) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients")

    @property
    def key_source(self) -> KeySource:
        """Which key source encrypts new backups."""
        if self.key_file is not None:
            return KeySource.KEY_FILE
        if self.passphrase_env is not None:
            return KeySource.PASSPHRASE
        return KeySource.RECIPIENTS

    # Encoding

    def manifest_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "algorithm": "AES-256-GCM",
            "key_derivation": "HKDF-SHA256",
            "segment_size": self.segment_size,
            "key_source": self.key_source.label,
        }
        source = self.key_source
        if source is KeySource.KEY_FILE:
            params["key_id"] = keys.key_id(self._master())
        elif source is KeySource.PASSPHRASE:
            scrypt, master = self._passphrase_key(os.urandom)
            params["key_id"] = keys.key_id(master)
            params["kdf"] = scrypt.to_manifest()
        else:
            params["key_ids"] = [r.key_id for r in self._recipients()]
        return params

    def encoder(self) -> Codec:
        """A fresh encoder whose header binds the artifact to nothing (its binding is empty), so
        it decodes wherever it is read; the pipeline uses :meth:`encoder_for`."""
        return self._encoder(os.urandom)

    def encoder_for(self, binding: ArtifactBinding) -> Codec:
        """A fresh encoder that seals ``binding`` into the header, which every segment
        authenticates: read as any other artifact, or in any other backup, it is refused."""
        return self._encoder(os.urandom, binding)

    def _encoder(self, randbytes: RandBytes, binding: ArtifactBinding | None = None) -> _Encoder:
        """An encoder drawing its randomness from ``randbytes``, its header carrying ``binding``.

        The seam for known-answer tests. The order of draws is part of the test vectors: the
        scrypt salt (16 bytes, first use of a passphrase config only), the artifact salt (32),
        then for recipients the file key (32) and one ephemeral private key (32) per recipient.
        """
        source = self.key_source
        scrypt: ScryptParams | None = None
        if source is KeySource.PASSPHRASE:
            scrypt, master = self._passphrase_key(randbytes)
        salt = randbytes(SALT_SIZE)
        if source is not KeySource.RECIPIENTS:
            if source is KeySource.KEY_FILE:
                master = self._master()
            kid = bytes.fromhex(keys.key_id(master))
            header = Header(
                source, self.segment_size, salt, key_id=kid, scrypt=scrypt, binding=binding
            )
        else:
            master = randbytes(KEY_SIZE)
            stanzas = []
            for recipient in self._recipients():
                ephemeral, wrapped = keys.wrap_key(master, recipient, randbytes(KEY_SIZE))
                stanzas.append(Stanza(bytes.fromhex(recipient.key_id), ephemeral, wrapped))
            header = Header(
                source, self.segment_size, salt, stanzas=tuple(stanzas), binding=binding
            )
        return _Encoder(AESGCM(payload_key(master, salt)), header.encode(), self.segment_size, salt)

    def _master(self) -> bytes:
        assert self.key_file is not None
        with self._cache.lock:
            if self._cache.master is None:
                self._cache.master = keys.load_key_file(self.key_file)
            return self._cache.master

    def _passphrase_key(self, randbytes: RandBytes) -> tuple[ScryptParams, bytes]:
        assert self.passphrase_env is not None
        with self._cache.lock:
            if self._cache.scrypt is None or self._cache.master is None:
                passphrase = _passphrase_from_env(self.passphrase_env, "passphrase_env")
                # One scrypt salt per loaded config: one slow stretch per backup, not per artifact;
                # every artifact still gets its own key through its own HKDF salt.
                scrypt = ScryptParams(randbytes(keys.SCRYPT_SALT_SIZE), self.scrypt_log_n)
                self._cache.master = scrypt.derive(passphrase)
                self._cache.scrypt = scrypt
            return self._cache.scrypt, self._cache.master

    def _recipients(self) -> tuple[Recipient, ...]:
        with self._cache.lock:
            if self._cache.recipients is None:
                found = [
                    keys.parse_recipient(text, where=f"recipients[{i}]")
                    for i, text in enumerate(self.recipients)
                ]
                found += [keys.load_recipient_file(p) for p in self.recipient_files]
                self._cache.recipients = tuple(found)
            return self._cache.recipients

    # Decoding

    @classmethod
    def decoder(cls, params: Mapping[str, Any], context: DecodeContext) -> Codec:
        keyring = Keyring.gather(context)
        spec = _spec_from_params(params)
        if spec is not None:
            # Fail now, before a restore touches its target, if no key fits; each artifact's
            # header (which is what is authenticated) is checked again as it is read.
            keyring.resolve(spec)
        return _Decoder(keyring, context.binding)


def _passphrase_from_env(name: str, option: str) -> bytes:
    value = os.environ.get(name)
    if value is None:
        raise KeyFileError(f"environment variable {name} ({option}) is not set")
    if not value:
        raise KeyFileError(f"environment variable {name} ({option}) is empty")
    return keys.normalize_passphrase(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _spec_from_params(params: Mapping[str, Any]) -> KeySpec | None:
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


@attrs.define
class Keyring:
    """The keys a decoder may try: from the config's encryption transforms (current and old keys,
    identity files) and from ``--identity``. What could not be loaded from the config is kept as
    ``notes`` for the error message, since another key may still fit."""

    keys: dict[str, bytes] = attrs.field(factory=dict)
    """Symmetric master keys, by key id."""
    passphrases: list[bytes] = attrs.field(factory=list)
    identities: dict[str, Identity] = attrs.field(factory=dict)
    """X25519 identities, by key id."""
    notes: list[str] = attrs.field(factory=list)

    @classmethod
    def gather(cls, context: DecodeContext) -> Keyring:
        """Collect every key ``context`` offers."""
        ring = cls()
        for t in context.configured:
            if not isinstance(t, Aes256Gcm):
                continue
            for path in ([t.key_file] if t.key_file else []) + list(t.old_key_files):
                try:
                    ring._add_key(keys.load_key_file(path))
                except KeyFileError as exc:
                    ring.notes.append(str(exc))
            envs = [(t.passphrase_env, "passphrase_env")] if t.passphrase_env else []
            envs += [(name, "old_passphrase_envs") for name in t.old_passphrase_envs]
            for name, option in envs:
                try:
                    ring.passphrases.append(_passphrase_from_env(name, option))
                except KeyFileError as exc:
                    ring.notes.append(str(exc))
            for path in t.identity_files:
                try:
                    ring._add_identity(keys.load_identity(path))
                except KeyFileError as exc:
                    ring.notes.append(str(exc))
        for path in context.identities:
            # Named on the command line: a file that cannot be used is the user's mistake, said now.
            found = keys.load_identity_or_key(Path(path))
            if isinstance(found, Identity):
                ring._add_identity(found)
            else:
                ring._add_key(found)
        return ring

    def _add_key(self, master: bytes) -> None:
        self.keys[keys.key_id(master)] = master

    def _add_identity(self, identity: Identity) -> None:
        self.identities[identity.key_id] = identity

    def resolve(self, spec: KeySpec) -> bytes | Identity:
        """The master key (or, for recipients, the identity) that ``spec`` needs.

        Raises :class:`MissingKeyError` when no key of the kind needed was given, and
        :class:`KeyMismatchError` when some were but none has the key id needed.
        """
        notes = tuple(self.notes)
        if spec.source is KeySource.RECIPIENTS:
            for kid in spec.key_ids:
                if kid in self.identities:
                    return self.identities[kid]
            if not self.identities:
                raise MissingKeyError(
                    needed=spec.key_ids,
                    recipients=True,
                    hint="no identity was given: pass --identity PRIVATE_KEY_FILE (or set "
                    "identity_files in the config's aes-256-gcm transform)",
                    notes=notes,
                )
            raise KeyMismatchError(
                needed=spec.key_ids, given=tuple(self.identities), recipients=True, notes=notes
            )
        needed = spec.key_ids[0]
        if spec.source is KeySource.KEY_FILE:
            if needed in self.keys:
                return self.keys[needed]
            if not self.keys:
                raise MissingKeyError(
                    needed=spec.key_ids,
                    hint="no key file was given: set key_file (or old_key_files) in the config's "
                    "aes-256-gcm transform, or pass --identity KEY_FILE",
                    notes=notes,
                )
            raise KeyMismatchError(needed=spec.key_ids, given=tuple(self.keys), notes=notes)
        assert spec.scrypt is not None
        tried: dict[str, bytes] = {}
        for passphrase in self.passphrases:
            master = spec.scrypt.derive(passphrase)
            tried[keys.key_id(master)] = master
        if needed in tried:
            return tried[needed]
        if not tried:
            raise MissingKeyError(
                needed=spec.key_ids,
                hint="no passphrase was given: set passphrase_env (or old_passphrase_envs) in the "
                "config's aes-256-gcm transform and export that variable",
                notes=notes,
            )
        raise KeyMismatchError(needed=spec.key_ids, given=tuple(tried), notes=notes)


class _Encoder:
    """Seals the stream segment by segment.

    A full segment is sealed only once a byte beyond it has arrived: until then it might be the
    last one, whose nonce differs. So the last segment holds 1 to ``segment_size`` bytes, and is
    empty only when the whole plaintext is.
    """

    def __init__(self, aead: AESGCM, header: bytes, segment_size: int, salt: bytes) -> None:
        self._aead = aead
        self._header = header
        self._segment_size = segment_size
        self._salt = salt
        self._buf = bytearray()
        self._index = 0
        self._pending_header = True

    def update(self, data: bytes) -> bytes:
        self._buf += data
        out = [self._take_header()]
        size = self._segment_size
        end = len(self._buf)
        pos = 0
        if end > size:
            with memoryview(self._buf) as view:
                while end - pos > size:
                    out.append(self._seal(view[pos : pos + size], last=False))
                    pos += size
            del self._buf[:pos]
        return b"".join(out)

    def finish(self) -> bytes:
        head = self._take_header()
        last = self._seal(bytes(self._buf), last=True)
        self._buf = bytearray()
        return head + last

    def artifact_params(self) -> dict[str, Any]:
        """This artifact's public parameters for the manifest: its HKDF salt."""
        return {"salt": _b64(self._salt)}

    def _take_header(self) -> bytes:
        if not self._pending_header:
            return b""
        self._pending_header = False
        return self._header

    def _seal(self, plaintext: bytes | memoryview, *, last: bool) -> bytes:
        sealed = self._aead.encrypt(nonce(self._index, last), plaintext, self._header)
        self._index += 1
        return sealed


class _Decoder:
    """Opens the stream segment by segment, never releasing a byte its tag has not vouched for.

    A full segment is opened as a middle one only once a byte beyond it has arrived; at
    :meth:`finish` what remains must open as the last segment. When a segment fails, the other
    reading (last / not last) is tried only to say what happened: appended data or truncation.
    With ``expected`` given, an artifact whose header is bound to another one is refused once
    segment 0 has authenticated that header, before its plaintext is released.
    """

    def __init__(self, keyring: Keyring, expected: ArtifactBinding | None = None) -> None:
        self._keyring = keyring
        self._expected = expected
        self._sealed_for: ArtifactBinding | None = None
        self._buf = bytearray()
        self._aead: AESGCM | None = None
        self._aad = b""
        self._sealed_size = 0
        self._index = 0

    def update(self, data: bytes) -> bytes:
        self._buf += data
        if self._aead is None and not self._start():
            return b""
        size = self._sealed_size
        end = len(self._buf)
        if end <= size:
            return b""
        out = []
        pos = 0
        with memoryview(self._buf) as view:
            while end - pos > size:
                out.append(self._open_middle(view[pos : pos + size]))
                pos += size
        del self._buf[:pos]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._aead is None and not self._start():
            if not self._buf:
                raise CiphertextError("truncated: the artifact is empty, without even its header")
            raise CiphertextError("truncated: the encryption header is incomplete")
        sealed = bytes(self._buf)
        self._buf = bytearray()
        return self._open_last(sealed)

    def _start(self) -> bool:
        """Read the header once it is all there; derive this artifact's key."""
        total = Header.length(bytes(self._buf[: _FIXED.size]))
        if total is None or len(self._buf) < total:
            return False
        raw = bytes(self._buf[:total])
        header = Header.decode(raw)
        found = self._keyring.resolve(header.spec)
        master = _unwrap(header, found) if isinstance(found, Identity) else found
        self._aead = AESGCM(payload_key(master, header.salt))
        self._aad = raw
        self._sealed_for = header.binding
        self._sealed_size = header.segment_size + TAG_SIZE
        del self._buf[:total]
        return True

    def _try_open(self, sealed: bytes | memoryview, *, last: bool) -> bytes | None:
        assert self._aead is not None
        try:
            return self._aead.decrypt(nonce(self._index, last), sealed, self._aad)
        except InvalidTag:
            return None

    def _open_middle(self, sealed: memoryview) -> bytes:
        plain = self._try_open(sealed, last=False)
        if plain is None:
            i = self._index
            if self._try_open(sealed, last=True) is not None:
                raise CiphertextError(
                    f"segment {i + 1}: data follows the last segment ({i}); bytes were appended "
                    "to the artifact",
                    segment=i + 1,
                )
            raise CiphertextError(self._failed(i), segment=i)
        self._check_binding()
        self._index += 1
        return plain

    def _open_last(self, sealed: bytes) -> bytes:
        i = self._index
        if len(sealed) < TAG_SIZE:
            raise CiphertextError(
                f"segment {i}: truncated ({len(sealed)} bytes, less than its tag)", segment=i
            )
        plain = self._try_open(sealed, last=True)
        if plain is None:
            if len(sealed) == self._sealed_size and self._try_open(sealed, last=False) is not None:
                raise CiphertextError(
                    f"segment {i + 1}: missing; the artifact was truncated after segment {i}, "
                    "which is not the last one",
                    segment=i + 1,
                )
            partial = len(sealed) < self._sealed_size
            raise CiphertextError(self._failed(i, partial=partial), segment=i)
        if not plain and i > 0:
            # pgvault never writes an empty last segment after others (see _Encoder).
            raise CiphertextError(f"segment {i}: an empty last segment is not valid", segment=i)
        self._check_binding()
        self._index += 1
        return plain

    def _check_binding(self) -> None:
        """Refuse an artifact sealed for another place, once a segment has vouched for the header.

        Checked only after segment 0 authenticates, so the binding it names is what pgvault wrote
        (a damaged header fails as such instead), and before that segment is released.
        """
        want, found = self._expected, self._sealed_for
        if self._index or want is None or found is None or found == want:
            return
        error = CiphertextError(
            f"artifact {want.path} of backup {want.backup_id} was encrypted for artifact "
            f"{found.path} of backup {found.backup_id}: it was moved or swapped"
        )
        error.artifact = want.path  # the message names it already: the vault must not prefix it
        raise error

    @staticmethod
    def _failed(i: int, *, partial: bool = False) -> str:
        causes = ["it was tampered with or corrupted", "segments were reordered or dropped"]
        if i == 0:
            causes.append("the header is not this data's")
        if partial:
            causes.append("the artifact was cut short inside it")
        why = ", ".join(causes[:-1]) + ", or " + causes[-1]
        return f"segment {i}: failed authentication ({why})"


def _unwrap(header: Header, identity: Identity) -> bytes:
    kid = bytes.fromhex(identity.key_id)
    for stanza in header.stanzas:
        if stanza.key_id == kid:
            key = keys.unwrap_key(stanza.wrapped, stanza.ephemeral, identity)
            if key is not None:
                return key
    raise CiphertextError(
        f"the encryption header's key for identity {identity.key_id} does not open "
        "(the header was tampered with or damaged)"
    )
