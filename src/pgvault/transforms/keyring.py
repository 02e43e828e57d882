"""Which key opens an encrypted artifact: the keys a decoder may try, and picking the one needed.

A restore or verify may hold several keys at once: the config's current key, older ones kept for
rotation (``old_key_files``, ``old_passphrase_envs``), X25519 identity files, and whatever
``--identity`` names. A :class:`Keyring` gathers them, and :meth:`Keyring.resolve` picks the one
an artifact's header (or its manifest entry) asks for by key id, or says plainly which is missing.
Loading and deriving each key is :mod:`pgvault.transforms.keys`'s; what a header holds is
:mod:`pgvault.transforms.encryption_format`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import attrs

from pgvault.exceptions import CiphertextError, KeyFileError, KeyMismatchError, MissingKeyError
from pgvault.transforms import keys
from pgvault.transforms.encryption_format import Header, KeySource, KeySpec
from pgvault.transforms.keys import Identity


class KeyOptions(Protocol):
    """The key options of a configured ``aes-256-gcm`` transform that a keyring reads (kept as a
    protocol so this module need not import the codec that uses it)."""

    @property
    def key_file(self) -> Path | None: ...
    @property
    def old_key_files(self) -> tuple[Path, ...]: ...
    @property
    def passphrase_env(self) -> str | None: ...
    @property
    def old_passphrase_envs(self) -> tuple[str, ...]: ...
    @property
    def identity_files(self) -> tuple[Path, ...]: ...


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
    def gather(cls, configured: Iterable[KeyOptions], identities: Iterable[Path]) -> Keyring:
        """Collect every key the ``configured`` encryption transforms and the ``identities``
        given on the command line offer."""
        ring = cls()
        for t in configured:
            for path in ([t.key_file] if t.key_file else []) + list(t.old_key_files):
                try:
                    ring._add_key(keys.load_key_file(path))
                except KeyFileError as exc:
                    ring.notes.append(str(exc))
            envs = [(t.passphrase_env, "passphrase_env")] if t.passphrase_env else []
            envs += [(name, "old_passphrase_envs") for name in t.old_passphrase_envs]
            for name, option in envs:
                try:
                    ring.passphrases.append(keys.passphrase_from_env(name, option))
                except KeyFileError as exc:
                    ring.notes.append(str(exc))
            for path in t.identity_files:
                try:
                    ring._add_identity(keys.load_identity(path))
                except KeyFileError as exc:
                    ring.notes.append(str(exc))
        for path in identities:
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


def unwrap_file_key(header: Header, identity: Identity) -> bytes:
    """The file key a recipients header wrapped for ``identity`` (whose key id the header names)."""
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
