"""Continuous WAL archiving: the archive in the vault and the commands PostgreSQL runs.

One module per concern:

* :mod:`~pgvault.wal.names` — WAL file names, segment headers, history files;
* :mod:`~pgvault.wal.settings` — the ``[wal]`` table;
* :mod:`~pgvault.wal.archive` — the vault's WAL layout, cluster records and stored form;
* :mod:`~pgvault.wal.push` — ``wal-push``: one file, PostgreSQL's archive contract;
* :mod:`~pgvault.wal.daemon` — ``wal-daemon``: the long-lived pusher and its spool protocol
  (``ack.sh`` is the archive command that goes with it);
* :mod:`~pgvault.wal.fetch` — ``wal-fetch``: one file, PostgreSQL's restore contract;
* :mod:`~pgvault.wal.prefetch` — verified prefetch during recovery (``fetch.sh``);
* :mod:`~pgvault.wal.chain` — ``wal-check``: timelines, ranges, gaps;
* :mod:`~pgvault.wal.configure` — ``wal-setup``: the postgresql.conf lines and their checks.
"""
