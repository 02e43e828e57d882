"""Restoring a backup: into a database (:mod:`~pgvault.operations.restore.database`), a partial
selection (:mod:`~pgvault.operations.restore.selection`), the target database's life
(:mod:`~pgvault.operations.restore.target`), and a files backup into a folder
(:mod:`~pgvault.operations.restore.untar`). Next here: point-in-time recovery from a base backup
and the WAL archive."""
