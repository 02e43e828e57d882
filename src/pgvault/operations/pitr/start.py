"""Starting a restored cluster and reporting where its recovery stopped (``restore --start``).

The server is started with ``pg_ctl`` (as ``postgres`` when pgvault runs as root), its log sent
to ``pgvault-recovery.log`` in the data directory in English (``logging_collector=off``,
``lc_messages=C``: the lines read here must be the ones PostgreSQL prints in C), and followed
until recovery is over: promoted and accepting connections, paused at the target, shut down at
the target, or stopped by an error. The report gives the point reached — the LSN where redo
ended and the time of the last transaction replayed, from PostgreSQL's own lines (``recovery
stopping before commit …``, ``last completed transaction was at log time …``) — or the FATAL
text.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path

import attrs

from pgvault.exceptions import RestoreError

LOG_NAME = "pgvault-recovery.log"

_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")
_STOPPING = re.compile(r"(recovery stopping [^\n]*)")
_LAST_TX = re.compile(r"last completed transaction was at log time ([^\n]+)")
_PAUSED_AT = re.compile(r"(pausing at the end of recovery|recovery has paused)")
_NEW_TLI = re.compile(r"selected new timeline ID: (\d+)")
_FATAL = re.compile(r"(?:FATAL|PANIC):\s+([^\n]*)")
_READY = "database system is ready to accept connections"
_SHUTDOWN_AT_TARGET = "shutdown at recovery target"


@attrs.frozen
class StartReport:
    """What happened when the restored cluster started."""

    state: str
    """``promoted``, ``paused``, ``shutdown`` (at the target), ``failed`` or ``timeout``."""
    log: Path
    port: int | None = None
    redo_lsn: str | None = None
    last_transaction: str | None = None
    stopping: str | None = None
    """PostgreSQL's ``recovery stopping …`` line, when it stopped at a target."""
    timeline: int | None = None
    """The new timeline a promotion selected."""
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether recovery ended where it was told to."""
        return self.state in ("promoted", "paused", "shutdown")

    def lines(self) -> list[str]:
        """The report in words."""
        if not self.ok:
            return [f"recovery failed ({self.state}): {self.error} (log: {self.log})"]
        what = {
            "promoted": f"promoted to timeline {self.timeline}" if self.timeline else "promoted",
            "paused": "paused at the target (pg_wal_replay_resume() promotes it)",
            "shutdown": "shut down at the target",
        }[self.state]
        out = [f"recovery ended in {self.seconds:.1f}s: {what}"]
        if self.stopping:
            out.append(f"  {self.stopping}")
        point = f"point reached: redo done at {self.redo_lsn or '?'}"
        if self.last_transaction:
            point += f", last transaction replayed at {self.last_transaction}"
        out.append(f"  {point}")
        if self.state == "promoted" and self.port is not None:
            out.append(f"  the restored server is running on port {self.port}")
        return out


def _as(owner: tuple[int, int] | None) -> list[str]:
    if os.geteuid() != 0 or owner is None:
        return []
    import pwd

    return ["runuser", "-u", pwd.getpwuid(owner[0]).pw_name, "--"]


def read_report(log: Path, state: str, *, port: int | None, seconds: float) -> StartReport:
    """Read the recovery's outcome from the server log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    redo = _REDO_DONE.findall(text)
    stopping = _STOPPING.findall(text)
    last = _LAST_TX.findall(text)
    tli = _NEW_TLI.findall(text)
    error = None
    if state in ("failed", "timeout"):
        fatal = _FATAL.findall(text)
        error = fatal[-1].strip() if fatal else ("no FATAL line in the log" if text else "no log")
        if state == "timeout":
            error = f"recovery did not end in time; last error line: {error}"
    return StartReport(
        state=state,
        log=log,
        port=port,
        redo_lsn=redo[-1] if redo else None,
        last_transaction=last[-1].strip() if last else None,
        stopping=stopping[-1].strip() if stopping else None,
        timeline=int(tli[-1]) if tli else None,
        error=error,
        seconds=seconds,
    )


def start_restored(
    data: Path,
    bindir: Path,
    *,
    port: int | None = None,
    owner: tuple[int, int] | None = None,
    timeout: float | None = None,
    poll: float = 0.2,
) -> StartReport:
    """Start the server in ``data`` and wait until its recovery is over (see the module doc)."""
    log = data / LOG_NAME
    with contextlib.suppress(FileNotFoundError):
        log.unlink()
    options = "-c logging_collector=off -c log_destination=stderr -c lc_messages=C"
    if port is not None:
        options += f" -c port={port}"
    started = time.monotonic()
    try:
        subprocess.run(
            [
                *_as(owner),
                *(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log)),
                *("-o", options, "-W", "start"),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=data,
            timeout=60,
        )
    except subprocess.CalledProcessError as exc:
        raise RestoreError(
            f"pg_ctl could not start the restored cluster in {data}: "
            f"{(exc.stderr or exc.stdout or '').strip()}"
        ) from None
    deadline = None if timeout is None else started + timeout
    pid_file = data / "postmaster.pid"
    seen_pid = False
    while True:
        elapsed = time.monotonic() - started
        text = log.read_text(errors="replace") if log.exists() else ""
        alive = pid_file.exists()
        seen_pid = seen_pid or alive
        if _SHUTDOWN_AT_TARGET in text and not alive:
            return read_report(log, "shutdown", port=port, seconds=elapsed)
        if _READY in text:
            return read_report(log, "promoted", port=port, seconds=elapsed)
        if _PAUSED_AT.search(text):
            return read_report(log, "paused", port=port, seconds=elapsed)
        if (seen_pid and not alive) or (_FATAL.search(text) and not alive):
            return read_report(log, "failed", port=port, seconds=elapsed)
        if not seen_pid and elapsed > 30:
            return read_report(log, "failed", port=port, seconds=elapsed)
        if deadline is not None and time.monotonic() > deadline:
            return read_report(log, "timeout", port=port, seconds=elapsed)
        time.sleep(poll)


def stop_restored(data: Path, bindir: Path, *, owner: tuple[int, int] | None = None) -> None:
    """Stop the server in ``data`` at once, if it runs (a drill's cluster is thrown away)."""
    if (data / "postmaster.pid").exists():
        subprocess.run(
            [*_as(owner), str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            cwd=data,
            timeout=120,
        )
