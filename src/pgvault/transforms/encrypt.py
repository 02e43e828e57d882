"""Client-side encryption: the ``aes-256-gcm`` transform and its streaming codec.

:class:`Aes256Gcm` is the transform a config names (registered as ``aes-256-gcm`` in
``pyproject.toml``): it validates its key options, records the public key parameters in the
manifest, and makes an encoder or a decoder per artifact. The encoder cuts the plaintext into
segments and seals each with AES-256-GCM; the decoder opens them one by one and releases a
segment only once its tag has checked out, so reordered, dropped, truncated or appended segments
and a swapped or edited header all fail, and an artifact moved to another backup or swapped with
a sibling is refused as misplaced. The master key comes from a key file, a passphrase (scrypt)
or, for X25519 recipients, is a random per-artifact key wrapped for each recipient, so a backup
host holding only public keys writes backups it cannot read.

The bytes (header, segment nonces and keys, binding) are
:mod:`pgvault.transforms.encryption_format`'s, specified in ``docs/encryption-format.md`` and
pinned by known-answer tests; key material is :mod:`pgvault.transforms.keys`'s, and choosing the
key an artifact needs is :mod:`pgvault.transforms.keyring`'s. The names those modules took from
this one are re-exported here, so ``pgvault.transforms.encrypt`` imports as before.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pgvault.exceptions import CiphertextError, KeyFileError
from pgvault.transforms import keys
from pgvault.transforms.api import ArtifactBinding, Codec, DecodeContext, Transform
from pgvault.transforms.encryption_format import (
    DEFAULT_SEGMENT_SIZE,
    FIXED_SIZE,
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_SIZE,
    MAX_RECIPIENTS,
    MAX_SEGMENT_SIZE,
    SALT_SIZE,
    TAG_SIZE,
    Header,
    KeySource,
    KeySpec,
    ScryptParams,
    Stanza,
    b64,
    nonce,
    payload_key,
    spec_from_params,
)
from pgvault.transforms.keyring import Keyring, unwrap_file_key
from pgvault.transforms.keys import KEY_ID_SIZE, KEY_SIZE, WRAPPED_KEY_SIZE, Identity, Recipient

# Every public name this module had before the format and the keyring moved out of it.
__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "FORMAT_VERSION",
    "KEY_ID_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "MAX_HEADER_SIZE",
    "MAX_RECIPIENTS",
    "MAX_SEGMENT_SIZE",
    "SALT_SIZE",
    "TAG_SIZE",
    "WRAPPED_KEY_SIZE",
    "Aes256Gcm",
    "Header",
    "Identity",
    "KeySource",
    "KeySpec",
    "Keyring",
    "RandBytes",
    "Recipient",
    "ScryptParams",
    "Stanza",
    "log",
    "nonce",
    "payload_key",
]

log = logging.getLogger("pgvault.transforms.encrypt")

RandBytes = Callable[[int], bytes]
"""Where an encoder gets its randomness: ``os.urandom``, or a fixed stream in known-answer tests."""


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
                passphrase = keys.passphrase_from_env(self.passphrase_env, "passphrase_env")
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
        configured = [t for t in context.configured if isinstance(t, Aes256Gcm)]
        keyring = Keyring.gather(configured, context.identities)
        spec = spec_from_params(params)
        if spec is not None:
            # Fail now, before a restore touches its target, if no key fits; each artifact's
            # header (which is what is authenticated) is checked again as it is read.
            keyring.resolve(spec)
        return _Decoder(keyring, context.binding)


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
        return {"salt": b64(self._salt)}

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
        total = Header.length(bytes(self._buf[:FIXED_SIZE]))
        if total is None or len(self._buf) < total:
            return False
        raw = bytes(self._buf[:total])
        header = Header.decode(raw)
        found = self._keyring.resolve(header.spec)
        master = unwrap_file_key(header, found) if isinstance(found, Identity) else found
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
