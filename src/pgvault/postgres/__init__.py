"""Speaking to PostgreSQL.

* :mod:`~pgvault.postgres.client` — finding client tools, connecting, running them without
  leaking passwords;
* :mod:`~pgvault.postgres.cluster` — throwaway clusters (initdb) for drills and restores;
* :mod:`~pgvault.postgres.archive` — the custom-format (and tar) archive reader;
* :mod:`~pgvault.postgres.globals` — the globals artifact (``pg_dumpall --globals-only``);
* :mod:`~pgvault.postgres.database` — a database's properties, roles and tablespaces.

Next here: recovery settings (``recovery.signal``, ``restore_command``, targets) for PITR. WAL
names and headers stay in :mod:`pgvault.wal.names`, beside the archive that uses them.
``from pgvault.postgres import connect`` (the module this package replaced) still works, with a
:class:`DeprecationWarning`: import from :mod:`pgvault.postgres.client`.
"""

from pgvault._deprecated import moved

__getattr__ = moved(__name__, ("pgvault.postgres.client",), warn_now=False)
