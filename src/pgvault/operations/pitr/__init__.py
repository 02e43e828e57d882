"""Point-in-time recovery from base backups and the WAL archive.

* :mod:`~pgvault.operations.pitr.targets` — recovery targets, read strictly from the user;
* :mod:`~pgvault.operations.pitr.plan` — which base backup, which timeline path, which WAL:
  everything decided and checked before a byte is written;
* :mod:`~pgvault.operations.pitr.settings` — ``recovery.signal`` and the recovery settings in
  ``postgresql.auto.conf``;
* :mod:`~pgvault.operations.pitr.restore` — ``pgvault restore --target-dir`` of a base backup;
* :mod:`~pgvault.operations.pitr.start` — starting the restored cluster and reporting where
  recovery stopped;
* :mod:`~pgvault.operations.pitr.marks` — ``pgvault mark``: named restore points in the vault;
* :mod:`~pgvault.operations.pitr.window` — the reachable window per timeline (list, check);
* :mod:`~pgvault.operations.pitr.drill` — drills of base backups (recovery time measured).
"""
