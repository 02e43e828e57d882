"""``pgvault wal-setup``: the postgresql.conf lines for this pipeline, and what to fix first.

It prints ``archive_mode``, the ``archive_command`` (the shipped ``ack.sh`` when ``[wal]`` has
``pg_wal`` and ``spool``, so a running ``wal-daemon`` stores segments and PostgreSQL pays a shell
per segment, not a Python start; ``wal-push`` otherwise, or with ``--sync``) and the
``restore_command`` (``fetch.sh`` with prefetch, ``wal-fetch`` otherwise), each quoted for
postgresql.conf. Then, as comments, what it checked: the sink's create-if-absent guarantee,
the spool's place (never inside the data directory), and, when the server can be asked, the
settings that need changing (``wal_level``, ``archive_mode`` …).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pgvault.sinks.api import CreateGuarantee
from pgvault.wal.chain import wal_dsn

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig


def script_path(name: str) -> Path:
    """Absolute path of a shell script shipped in the package (``ack.sh``, ``fetch.sh``)."""
    return Path(str(resources.files("pgvault.wal").joinpath(name))).resolve()


def pgvault_command() -> list[str]:
    """How PostgreSQL should start pgvault: the ``pgvault`` script beside this interpreter (a
    venv's ``bin``), else ``python -m pgvault`` with this interpreter."""
    beside = Path(sys.executable).with_name("pgvault")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("pgvault")
    if found:
        return [found]
    return [sys.executable, "-m", "pgvault"]


def conf_string(command: list[str]) -> str:
    """``command`` as a shell line inside a postgresql.conf string literal."""
    line = shlex.join(command)
    return "'" + line.replace("'", "''") + "'"


def archive_command(config: PipelineConfig, command: list[str], *, sync: bool = False) -> str:
    """The ``archive_command`` value (quoted for postgresql.conf)."""
    settings = config.wal
    path = str(config.path.resolve()) if config.path else "CONFIG"
    if sync or settings.spool is None or settings.pg_wal is None:
        return conf_string([*command, "wal-push", path, "%p"])
    timeout = max(1, int(settings.ack_timeout.delta.total_seconds()))
    return conf_string(
        [
            "/bin/sh",
            str(script_path("ack.sh")),
            str(settings.spool),
            str(timeout),
            path,
            "%p",
            *command,
        ]
    )


def restore_command(config: PipelineConfig, command: list[str]) -> str:
    """The ``restore_command`` value (quoted for postgresql.conf)."""
    settings = config.wal
    path = str(config.path.resolve()) if config.path else "CONFIG"
    if settings.spool is None or settings.prefetch == 0:
        return conf_string([*command, "wal-fetch", path, "%f", "%p"])
    return conf_string(
        ["/bin/sh", str(script_path("fetch.sh")), str(settings.spool), path, "%f", "%p", *command]
    )


def setup_lines(
    config: PipelineConfig,
    *,
    command: list[str] | None = None,
    sync: bool = False,
    ask_server: bool = True,
) -> list[str]:
    """What ``pgvault wal-setup`` prints (see the module doc)."""
    command = command or pgvault_command()
    settings = config.wal
    daemon = not sync and settings.spool is not None and settings.pg_wal is not None
    out = [
        f"# pgvault wal-setup: vault {config.name!r} at {config.sink.describe()}",
        "# postgresql.conf (archive_mode needs a restart; the commands a reload):",
        "wal_level = replica",
        "archive_mode = on",
        f"archive_command = {archive_command(config, command, sync=sync)}",
        "archive_timeout = 60s   # a quiet server still closes a segment a minute",
        "# for recovery (a restore writes it for you):",
        f"restore_command = {restore_command(config, command)}",
    ]
    if daemon:
        out.append(
            "# the archive command above needs `pgvault wal-daemon CONFIG` running as postgres "
            "(it stores segments itself while the daemon is down); without the daemon:"
        )
        out.append(f"#   archive_command = {archive_command(config, command, sync=True)}")
    notes: list[str] = []
    guarantee = config.sink.create_guarantee
    if guarantee is CreateGuarantee.ATOMIC:
        notes.append(f"sink {config.sink.describe()}: create-if-absent is atomic: ok")
    else:
        notes.append(
            f"sink {config.sink.describe()}: create-if-absent is only checked before writing: two "
            "servers archiving the same name at the same instant could both succeed"
        )
    if settings.spool is not None:
        spool = settings.spool.resolve()
        pg_wal = settings.pg_wal.resolve() if settings.pg_wal else None
        if pg_wal is not None and spool.is_relative_to(pg_wal.parent):
            notes.append(f"PROBLEM: spool {spool} is inside the data directory: move it out")
        else:
            notes.append(f"spool {spool}: outside the data directory: ok")
    dsn = wal_dsn(config) if ask_server else None
    if dsn:
        notes += _server_notes(dsn, settings.pg_wal)
    elif ask_server:
        notes.append("no server to ask ([wal] dsn or the source's dsn): settings not checked")
    out += [f"# {n}" for n in notes]
    return out


def _server_notes(dsn: str, pg_wal: Path | None) -> list[str]:
    import psycopg

    wanted = {"wal_level": ("replica", "logical"), "archive_mode": ("on", "always")}
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            names = [*wanted, "archive_command", "data_directory", "wal_segment_size"]
            values = {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]
    except Exception as exc:
        first = str(exc).strip().splitlines()
        return [f"server not reachable ({first[0] if first else type(exc).__name__}): not checked"]
    notes = []
    for name, good in wanted.items():
        if values[name] in good:
            notes.append(f"server: {name} = {values[name]}: ok")
        else:
            notes.append(f"PROBLEM: server: {name} = {values[name]} (needs {good[0]}; restart)")
    notes.append(f"server: archive_command is now {values['archive_command']!r}")
    data = Path(values["data_directory"])
    if pg_wal is not None and pg_wal.resolve() != (data / "pg_wal").resolve():
        notes.append(f"PROBLEM: [wal] pg_wal is {pg_wal}, the server's is {data / 'pg_wal'}")
    notes.append(f"server: data directory {data}, {values['wal_segment_size']} segments")
    return notes
