"""The command handlers, one module per area; :mod:`pgvault.cli.app` imports a module only when
one of its commands runs, so these may import the driver, the engine and the operations.

* :mod:`~pgvault.cli.commands.backup` — ``run``, ``keygen``;
* :mod:`~pgvault.cli.commands.listing` — ``list``, ``show``, ``verify``;
* :mod:`~pgvault.cli.commands.restore` — ``restore`` (and its point-in-time hand-over), ``mark``;
* :mod:`~pgvault.cli.commands.retention` — ``prune``, ``pin``, ``unpin``;
* :mod:`~pgvault.cli.commands.health` — ``check``, ``drill``, ``doctor``;
* :mod:`~pgvault.cli.commands.storage` — ``copy``, ``thaw``, ``export``, ``cat`` and the
  destination-aware parts of the others;
* :mod:`~pgvault.cli.commands.wal` — ``wal-push``, ``wal-fetch``, ``wal-daemon``, ``wal-setup``,
  ``wal-check``, ``wal-prefetch``;
* :mod:`~pgvault.cli.commands.report` — ``report``.
"""
