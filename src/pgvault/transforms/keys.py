"""Key material for client-side encryption: key files, passphrases, X25519 identities, recipients.

This module owns everything that touches a secret before the cipher does: generating and
loading symmetric key files (``pgvault keygen``), stretching passphrases with scrypt, X25519 key
pairs (``pgvault keygen --x25519``) and the wrapping of a per-artifact key for each recipient,
and the *key ids* that let a backup say which key it needs without revealing anything about it.
The byte format that uses them is :mod:`pgvault.transforms.encrypt`; both are specified in
``docs/encryption-format.md``.

Secrets never leave this module in a message: errors name the file or the variable, never its
content, and nothing here logs key material.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import os
import unicodedata
from pathlib import Path

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pgvault.exceptions import KeyFileError

log = logging.getLogger("pgvault.keys")

KEY_SIZE = 32
"""Bytes of a symmetric master key, a per-artifact file key, and an X25519 key."""

KEY_ID_SIZE = 8
"""Bytes of a key id (shown as 16 hex digits)."""

WRAPPED_KEY_SIZE = KEY_SIZE + 16
"""A file key sealed for one recipient: the key plus its AES-GCM tag."""

PUBLIC_PREFIX = "pgvault-x25519:"
"""How an X25519 public key (a recipient) is written: this prefix, then base64 of 32 bytes."""

SECRET_PREFIX = "PGVAULT-X25519-SECRET:"  # noqa: S105 (a file-format marker, not a secret)
"""The line of an identity file that holds the private key, base64 after this prefix."""

_KEY_ID_INFO = b"pgvault key id v1"
_PUBLIC_ID_INFO = b"pgvault x25519 key id v1"
_WRAP_INFO = b"pgvault x25519 wrap v1"
_ZERO_NONCE = bytes(12)


# Key ids


def key_id(master: bytes) -> str:
    """The key id of a symmetric master key (a key file's, or a passphrase's scrypt output).

    HKDF-SHA256 with its own ``info`` label: a pseudorandom 64-bit fingerprint, so it identifies
    the key without revealing anything about it (and is unrelated to the keys derived for data).
    """
    return _hkdf(master, salt=None, info=_KEY_ID_INFO, length=KEY_ID_SIZE).hex()


def public_key_id(public: bytes) -> str:
    """The key id of an X25519 public key: the first 8 bytes of a labelled SHA-256."""
    return hashlib.sha256(_PUBLIC_ID_INFO + public).digest()[:KEY_ID_SIZE].hex()


def _hkdf(ikm: bytes, *, salt: bytes | None, info: bytes, length: int = KEY_SIZE) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


# Symmetric key files


def generate_key() -> bytes:
    """32 fresh random bytes from the operating system's CSPRNG."""
    return os.urandom(KEY_SIZE)


def encode_key(key: bytes) -> str:
    """The text of a key file: the key in standard base64 and a newline."""
    return base64.b64encode(key).decode("ascii") + "\n"


def decode_key(data: bytes, *, where: str) -> bytes:
    """A symmetric key from a key file's bytes: exactly 32 raw bytes, or their base64.

    Text files may hold ``#`` comment lines and surrounding whitespace. ``where`` names the file
    in errors; the content is never quoted.
    """
    if len(data) == KEY_SIZE:
        return data
    try:
        text = data.decode("ascii")
        payload = "".join(
            line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")
        )
        key = base64.b64decode(payload, validate=True)
    except (UnicodeDecodeError, binascii.Error):
        key = b""
    if len(key) != KEY_SIZE:
        raise KeyFileError(
            "not a pgvault key file: expected 32 random bytes, raw or in base64 "
            "(make one with pgvault keygen --out PATH)",
            path=where,
        )
    return key


def load_key_file(path: Path) -> bytes:
    """Read the symmetric key at ``path``; :class:`KeyFileError` names the file on any problem."""
    data = _read_secret_file(path, "key file")
    return decode_key(data, where=str(path))


def write_key_file(path: Path, key: bytes | None = None) -> str:
    """Write a new key file at ``path`` (mode 0600, never over an existing file); its key id."""
    key = generate_key() if key is None else key
    if len(key) != KEY_SIZE:
        raise ValueError("a key is 32 bytes")
    _create_exclusive(path, encode_key(key).encode("ascii"), 0o600)
    return key_id(key)


# Passphrases


SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_SIZE = 16
MAX_SCRYPT_MEMORY = 1 << 30
"""A decoder refuses scrypt parameters needing more memory than this (a hostile header)."""


def scrypt_memory(log_n: int, r: int) -> int:
    """Bytes of memory scrypt needs for cost ``2**log_n`` and block size ``r``."""
    return 128 * r * (1 << log_n)


def normalize_passphrase(passphrase: str) -> bytes:
    """The bytes a passphrase stands for: UTF-8 of its NFC form, so the same typed text always
    gives the same key whatever the keyboard or terminal composed."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


@functools.lru_cache(maxsize=32)
def derive_passphrase_key(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    """The 32-byte master key scrypt stretches ``passphrase`` into.

    Cached: scrypt is deliberately slow, and one backup's artifacts (and a verify of all of them)
    share one salt, so each passphrase is stretched once per process.
    """
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=1 << log_n, r=r, p=p)
    return kdf.derive(passphrase)


# X25519 identities and recipients


@attrs.frozen
class Recipient:
    """An X25519 public key that backups are encrypted for."""

    public: bytes

    @property
    def key_id(self) -> str:
        """The recipient's key id (shared by its identity)."""
        return public_key_id(self.public)

    def __str__(self) -> str:
        return PUBLIC_PREFIX + base64.b64encode(self.public).decode("ascii")


@attrs.frozen
class Identity:
    """An X25519 private key that opens backups encrypted for its public key."""

    private: bytes = attrs.field(repr=False)

    @property
    def recipient(self) -> Recipient:
        """The public half."""
        priv = X25519PrivateKey.from_private_bytes(self.private)
        return Recipient(priv.public_key().public_bytes_raw())

    @property
    def key_id(self) -> str:
        """The key id of the public half."""
        return self.recipient.key_id


def generate_identity() -> Identity:
    """A fresh X25519 key pair."""
    return Identity(X25519PrivateKey.generate().private_bytes_raw())


def parse_recipient(text: str, *, where: str) -> Recipient:
    """A recipient from its text form ``pgvault-x25519:BASE64``; ``where`` names it in errors."""
    text = text.strip()
    if not text.startswith(PUBLIC_PREFIX):
        raise KeyFileError(
            f"not an X25519 public key: expected {PUBLIC_PREFIX}… (from pgvault keygen --x25519)",
            path=where,
        )
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX) :], validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != KEY_SIZE:
        raise KeyFileError(
            "X25519 public key is malformed (expected 32 bytes in base64)", path=where
        )
    return Recipient(raw)


def load_recipient_file(path: Path) -> Recipient:
    """Read a public key file (``PATH.pub`` of ``pgvault keygen --x25519``)."""
    try:
        text = path.read_text("ascii")
    except FileNotFoundError:
        raise KeyFileError("public key file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read public key file: {exc}", path=str(path)) from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise KeyFileError(f"expected one line {PUBLIC_PREFIX}…", path=str(path))
    return parse_recipient(lines[0], where=str(path))


def encode_identity(identity: Identity) -> str:
    """The text of an identity file: comments naming the key id and public key, then the secret."""
    secret = base64.b64encode(identity.private).decode("ascii")
    return (
        "# pgvault X25519 identity (private key): keep it secret and off the database host\n"
        f"# key id: {identity.key_id}\n"
        f"# public key: {identity.recipient}\n"
        f"{SECRET_PREFIX}{secret}\n"
    )


def decode_identity(data: bytes, *, where: str) -> Identity | None:
    """The identity in an identity file's bytes, or ``None`` if it is not an identity file."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    secrets = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(SECRET_PREFIX)]
    if not secrets:
        return None
    if len(secrets) > 1:
        raise KeyFileError("identity file holds more than one secret key", path=where)
    try:
        raw = base64.b64decode(secrets[0][len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != KEY_SIZE:
        raise KeyFileError("X25519 identity is malformed (expected 32 bytes in base64)", path=where)
    return Identity(raw)


def load_identity(path: Path) -> Identity:
    """Read an identity file (``PATH`` of ``pgvault keygen --x25519``)."""
    identity = decode_identity(_read_secret_file(path, "identity file"), where=str(path))
    if identity is None:
        raise KeyFileError(
            f"not an X25519 identity (no {SECRET_PREFIX} line; make one with "
            "pgvault keygen --x25519 --out PATH)",
            path=str(path),
        )
    return identity


def load_identity_or_key(path: Path) -> Identity | bytes:
    """What ``--identity PATH`` names: an X25519 identity, or else a symmetric key file."""
    data = _read_secret_file(path, "identity file")
    identity = decode_identity(data, where=str(path))
    if identity is not None:
        return identity
    try:
        return decode_key(data, where=str(path))
    except KeyFileError:
        raise KeyFileError(
            "neither an X25519 identity (pgvault keygen --x25519) nor a key file (pgvault keygen)",
            path=str(path),
        ) from None


def write_identity(path: Path, identity: Identity | None = None) -> tuple[Identity, Path]:
    """Write a key pair: the identity at ``path`` (0600) and its public key at ``path.pub``.

    Refuses to overwrite either file. Returns the identity and the public key's path.
    """
    identity = generate_identity() if identity is None else identity
    pub_path = path.with_name(path.name + ".pub")
    for p in (path, pub_path):
        if p.exists() or p.is_symlink():
            raise KeyFileError("already exists; pgvault never overwrites a key", path=str(p))
    _create_exclusive(path, encode_identity(identity).encode("ascii"), 0o600)
    _create_exclusive(pub_path, f"{identity.recipient}\n".encode("ascii"), 0o644)
    return identity, pub_path


def wrap_key(
    file_key: bytes, recipient: Recipient, ephemeral_private: bytes
) -> tuple[bytes, bytes]:
    """Seal ``file_key`` for ``recipient``; returns (ephemeral public key, wrapped key).

    An ephemeral X25519 key agrees a secret with the recipient; HKDF-SHA256 over it, salted with
    both public keys, gives a single-use wrapping key, so AES-256-GCM with a zero nonce is safe.
    """
    eph = X25519PrivateKey.from_private_bytes(ephemeral_private)
    eph_public = eph.public_key().public_bytes_raw()
    shared = _exchange(eph, recipient.public)
    if shared is None:
        raise KeyFileError(f"X25519 public key {recipient} is invalid (a low-order point)")
    wrap = _hkdf(shared, salt=eph_public + recipient.public, info=_WRAP_INFO)
    return eph_public, AESGCM(wrap).encrypt(_ZERO_NONCE, file_key, None)


def unwrap_key(wrapped: bytes, ephemeral_public: bytes, identity: Identity) -> bytes | None:
    """The file key sealed in ``wrapped`` for ``identity``, or ``None`` if it does not open."""
    priv = X25519PrivateKey.from_private_bytes(identity.private)
    shared = _exchange(priv, ephemeral_public)
    if shared is None:
        return None
    wrap = _hkdf(shared, salt=ephemeral_public + identity.recipient.public, info=_WRAP_INFO)
    try:
        return AESGCM(wrap).decrypt(_ZERO_NONCE, wrapped, None)
    except InvalidTag:
        return None


def _exchange(private: X25519PrivateKey, public: bytes) -> bytes | None:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # A low-order point gives an all-zero secret that an attacker could predict: OpenSSL
        # refuses it, and so do we.
        return None


# Files


def _read_secret_file(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{what} not found", path=str(path)) from None
    except IsADirectoryError:
        raise KeyFileError(f"{what} is a folder", path=str(path)) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what}: {exc.strerror}", path=str(path)) from None
    if mode & 0o077:
        # ssh refuses such keys; we only warn, since a restore on a bad day must still work.
        log.warning(
            "%s %s is readable by other users (mode %o); chmod 600 it", what, path, mode & 0o777
        )
    return data


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(
            "already exists; pgvault never overwrites a key", path=str(path)
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot create: {exc.strerror}", path=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write: {exc.strerror}", path=str(path)) from None
