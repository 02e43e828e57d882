"""Restoring a backup.

* :mod:`~pgvault.operations.restore.database` — the entry point :func:`restore` and a pg_dump
  backup into a database (checks, order of steps, validation);
* :mod:`~pgvault.operations.restore.options` — :class:`RestoreOptions` (the choices) and
  :class:`RestoreResult`;
* :mod:`~pgvault.operations.restore.replace` — replacing an existing database: the safety backup
  and what a failure leaves;
* :mod:`~pgvault.operations.restore.loading` — pg_restore/psql runs, lists, work files;
* :mod:`~pgvault.operations.restore.selection` — a partial selection (``--table``/``--schema``);
* :mod:`~pgvault.operations.restore.target` — the target database's life (checks, create, drop);
* :mod:`~pgvault.operations.restore.validation` — the restored tables against the manifest;
* :mod:`~pgvault.operations.restore.files` and :mod:`~pgvault.operations.restore.untar` — a files
  backup into a folder, member by member.

Point-in-time recovery of base backups is :mod:`pgvault.operations.pitr`.
"""
