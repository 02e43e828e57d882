"""The exit codes of ``pgvault`` (see :mod:`pgvault.cli.app`); a leaf the parser can use."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CRITICAL = 2
EXIT_UNKNOWN = 3  # check: nothing could be checked (Nagios UNKNOWN)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM killed
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` reports for yes
EXIT_ABORT_RECOVERY = 200
"""wal-fetch: recovery must stop. The same value as :data:`pgvault.wal.fetch.EXIT_ABORT_RECOVERY`
(tests/cli checks), repeated so that parsing ``wal-fetch`` imports no WAL code."""
