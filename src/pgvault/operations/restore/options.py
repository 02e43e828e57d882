"""What a restore is asked to do (:class:`RestoreOptions`) and what it did (:class:`RestoreResult`).

One value carries the user's choices from the command line (or a caller of :func:`pgvault.restore`)
through the entry point into the database or files restore, instead of the same fifteen keyword
arguments at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from pgvault.operations.restore.validation import ValidationReport


def _mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen
class RestoreOptions:
    """How to restore: every choice of ``pgvault restore`` except where to and from which backup.

    The defaults are a plain restore: everything in the backup, one job, owners and privileges
    as dumped, missing roles created from the backup's globals, subscriptions left out.
    """

    jobs: int = 1
    """Parallel pg_restore jobs (custom archives and split dumps)."""
    drop_existing: bool = False
    """Replace an existing database (after a safety backup of it)."""
    no_owner: bool = False
    no_privileges: bool = False
    role: str | None = None
    """Role to restore as (``SET ROLE``)."""
    tables: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Restore only these tables (with their partitions and what they need)."""
    schemas: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Restore only these schemas, whole."""
    create_roles: bool = True
    """Create the roles the target lacks from the backup's globals."""
    tablespace_map: Mapping[str, str] = attrs.field(factory=dict, converter=_mapping)
    """Old tablespace name to new (custom archives)."""
    no_tablespaces: bool = False
    subscriptions: bool = False
    """Restore logical replication subscriptions (disabled, not connected)."""
    locale: str | None = None
    """Create the database with this libc locale instead of the source's."""
    work_dir: Path | None = None
    """Folder for a parallel restore's work file (default: ``[restore] work_dir``, then TMPDIR)."""
    identities: tuple[Path, ...] = attrs.field(default=(), converter=tuple)
    """Private key files that may open the backup's artifacts."""
    allow_outside_symlinks: bool = False
    """Files backups: also restore symlinks that lead outside the target folder."""

    @property
    def partial(self) -> bool:
        """Whether only a selection (``tables``/``schemas``) is restored."""
        return bool(self.tables or self.schemas)

    @classmethod
    def of(cls, options: RestoreOptions | None, choices: Mapping[str, Any]) -> RestoreOptions:
        """``options`` (or the defaults) with the keyword ``choices`` of a caller that names them
        one by one; an unknown name is a :class:`TypeError`, as for any keyword argument."""
        base = options if options is not None else cls()
        if not choices:
            return base
        unknown = sorted(set(choices) - {a.name for a in attrs.fields(cls)})
        if unknown:
            raise TypeError(f"unexpected restore option(s): {', '.join(unknown)}")
        return attrs.evolve(base, **choices)


@attrs.frozen
class RestoreResult:
    """What a restore did."""

    backup_id: str
    target: str
    """The database (``user@host:port/db``) or folder restored into."""
    raw_bytes: int
    safety_backup_id: str | None = None
    """Id of the safety backup taken before replacing an existing database."""
    validation: ValidationReport | None = None
    """Tables compared with the manifest (database restores)."""
    created_roles: tuple[str, ...] = ()
    """Roles the target server lacked and the restore created from the backup's globals."""
    notes: tuple[str, ...] = ()
    """What was left out or refused (a setting of a missing role, subscriptions not restored,
    a replication slot left on a publisher), one line each."""
    warnings: tuple[str, ...] = ()
    """What the restore could not bring back, by name: materialized views left without their
    data, objects a partial restore left out because they need tables it does not include."""
