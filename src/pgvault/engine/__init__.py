"""Running a backup: stage threads and queues (:mod:`~pgvault.engine.flow`), the backup pipeline
(:mod:`~pgvault.engine.pipeline`), progress display (:mod:`~pgvault.engine.progress`) and the
run lock (:mod:`~pgvault.engine.runlock`)."""
