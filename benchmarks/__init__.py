"""pgvault's benchmarks: compressors, and the whole pipeline against pg_dump and shell scripts.

Run with ``nox -s benchmarks`` (or ``python -m benchmarks.run``); the results are written to
``docs/benchmarks.md``. Timings are reported, never asserted.
"""
