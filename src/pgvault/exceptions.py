"""The one exception tree of pgvault.

Every error a user can cause or meet is a :class:`PgVaultError`; its ``str()`` is the one line the
CLI prints. Leaves carry the context that line names (which file and key, which artifact, which
backup), so a caller of the Python API can act on it without parsing text. Only ``cli.py`` maps
these to exit codes.
"""

from __future__ import annotations


class PgVaultError(Exception):
    """Root of every error pgvault raises on purpose."""


class ConfigError(PgVaultError):
    """A pipeline config is missing, unreadable or wrong.

    ``path`` is the config file and ``key`` the dotted key at fault (``source.dsn``), when known.
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        where = ""
        if path and key:
            where = f"{path}: {key}: "
        elif path:
            where = f"{path}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.key = key


class PluginError(PgVaultError):
    """A component or hook plugin cannot be found or loaded."""


class ExecHookError(PluginError):
    """A ``before_*`` exec hook (``[[hook]]``) failed or timed out, so the operation did not start.

    The message names the event and the command, and ends with the tail of its output.
    """


class SourceError(PgVaultError):
    """A source (pg_dump, files …) failed; the message carries the tool's own error text."""


class SourceUnavailableError(SourceError):
    """The source's database could not be reached (refused, timed out, gone, or refusing this
    login): worth another attempt later, unlike a dump that failed."""


class TransformError(PgVaultError):
    """A transform could not encode or decode a stream.

    ``artifact`` names the stored artifact being processed, when known.
    """

    def __init__(self, message: str, *, artifact: str | None = None) -> None:
        super().__init__(f"{artifact}: {message}" if artifact else message)
        self.artifact = artifact


class KeyFileError(ConfigError):
    """A key file, X25519 identity or public key, or passphrase variable cannot be used.

    ``path`` names the file (or is ``None``); the message never quotes the secret itself.
    """


class DecryptionKeyError(TransformError):
    """No key at hand opens an encrypted backup.

    ``needed`` holds the key ids that would (one for a key file or passphrase, one per recipient),
    ``given`` the ids of the keys that were tried, ``recipients`` whether the backup was encrypted
    for X25519 recipients, ``notes`` why a configured key could not even be tried (a missing file,
    an unset variable), and ``backup_id`` the backup, when known (see :meth:`for_backup`).
    """

    def __init__(
        self,
        *,
        needed: tuple[str, ...],
        given: tuple[str, ...] = (),
        recipients: bool = False,
        hint: str = "",
        notes: tuple[str, ...] = (),
        backup_id: str | None = None,
        artifact: str | None = None,
    ) -> None:
        self.needed = needed
        self.given = given
        self.recipients = recipients
        self.hint = hint
        self.notes = notes
        self.backup_id = backup_id
        super().__init__(self._describe(), artifact=artifact)

    @property
    def _subject(self) -> str:
        return f"backup {self.backup_id}" if self.backup_id else "the artifact"

    @property
    def _needed_text(self) -> str:
        ids = ", ".join(self.needed)
        if self.recipients:
            return f"for key id{'s' if len(self.needed) > 1 else ''} {ids}"
        return f"with key id {ids}"

    @property
    def _notes_text(self) -> str:
        return f" ({'; '.join(self.notes)})" if self.notes else ""

    def _describe(self) -> str:
        return f"{self._subject} is encrypted {self._needed_text}{self._notes_text}"

    def for_backup(self, backup_id: str) -> DecryptionKeyError:
        """The same error, its message naming ``backup_id``."""
        return type(self)(
            needed=self.needed,
            given=self.given,
            recipients=self.recipients,
            hint=self.hint,
            notes=self.notes,
            backup_id=backup_id,
            artifact=self.artifact,
        )


class MissingKeyError(DecryptionKeyError):
    """An encrypted backup was read with no key (or identity) of the kind it needs; ``hint`` says
    how to give one."""

    def _describe(self) -> str:
        needed = f"{self._subject} is encrypted {self._needed_text}"
        return f"{needed}, and {self.hint}{self._notes_text}"


class KeyMismatchError(DecryptionKeyError):
    """Keys were given, but none is the one an encrypted backup needs."""

    def _describe(self) -> str:
        what = "identit" if self.recipients else "key"
        if len(self.given) == 1:
            given = f"the {what}{'y' if self.recipients else ''} given has id {self.given[0]}"
        else:
            given = f"the {what}{'ies' if self.recipients else 's'} given have ids " + ", ".join(
                self.given
            )
        return f"{self._subject} was encrypted {self._needed_text}; {given}{self._notes_text}"


class CiphertextError(TransformError):
    """Encrypted bytes failed authentication: tampered with, truncated, reordered or corrupt.

    ``segment`` is the index (from 0) of the segment at fault, ``None`` when it is the header.
    """

    def __init__(
        self, message: str, *, segment: int | None = None, artifact: str | None = None
    ) -> None:
        super().__init__(message, artifact=artifact)
        self.segment = segment


class SinkError(PgVaultError):
    """A sink could not store, read, list or delete an object."""


class ObjectNotFoundError(SinkError):
    """An object the caller asked for does not exist in the sink."""


class ObjectArchivedError(SinkError):
    """An object is in an archive storage class (S3 GLACIER, DEEP_ARCHIVE): it exists, but
    cannot be read until a restore request has brought a copy back (hours)."""

    def __init__(self, message: str, *, storage_class: str | None = None) -> None:
        super().__init__(message)
        self.storage_class = storage_class


class ObjectExistsError(SinkError):
    """A create-if-absent write found its key taken: nothing was written, the object there is
    untouched. ``key`` names it."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class DestinationError(SinkError):
    """One destination of a pipeline with several (``[[sink]]``) failed. ``destination`` is its
    ``name``; the message says what failed and whether the backup still counts."""

    def __init__(self, message: str, *, destination: str) -> None:
        super().__init__(message)
        self.destination = destination


class VaultError(PgVaultError):
    """The vault's content is not what an operation needs (no such backup, bad manifest …)."""


class BackupNotFoundError(VaultError):
    """No complete backup matches the id (or ``latest``) asked for."""


class ManifestError(VaultError):
    """A manifest cannot be read: malformed, or written by a newer pgvault."""


class IntegrityError(VaultError):
    """Stored bytes differ from what the manifest recorded; ``artifact`` names the culprit."""

    def __init__(self, message: str, *, artifact: str) -> None:
        super().__init__(message)
        self.artifact = artifact


class RestoreError(PgVaultError):
    """A restore was refused or failed; the message says what the target now holds."""


class RunLockedError(PgVaultError):
    """Another run of the same pipeline (and kind) is going: this one did not start. The message
    names the holder (backup id, host, pid, since when)."""


class ArchiveFormatError(PgVaultError):
    """A pg_dump archive file is not laid out as pgvault can read it: not a custom-format
    archive, an archive version pgvault does not know, or truncated or damaged.

    ``path`` names the file; the message says what was found where.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class Aborted(PgVaultError):
    """The user declined a confirmation prompt; nothing was changed."""
