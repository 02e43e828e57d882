"""The ``pgvault`` command (entry point :func:`pgvault.cli.app.main`).

* :mod:`~pgvault.cli.app` — the parser, dispatch, logging setup and exit codes;
* the command handlers, grouped by area, imported only when their command runs.
"""

from pgvault._deprecated import moved

__getattr__ = moved(__name__, ("pgvault.cli.app",), warn_now=False)
