"""Running a command and measuring what a user pays for it: wall time, CPU time, peak memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class Sample:
    """One run of one command."""

    wall: float
    cpu: float
    """User + system seconds of the command's process tree (not the PostgreSQL server's)."""
    max_rss_mb: float
    """Largest resident set of any single process in the tree."""
    output_bytes: int | None = None
    server_cpu: float | None = None
    """CPU seconds the PostgreSQL server spent meanwhile, when asked for (see :func:`run`)."""


GNU_TIME = "/usr/bin/time"


def compile_bytecode() -> None:
    """Compile pgvault's modules to bytecode, as an installed package has them.

    An editable install in an environment with ``PYTHONDONTWRITEBYTECODE=1`` (this project's
    machines) compiles 300-odd modules from source at every start: about 0.25 CPU-s per command
    that no installed pgvault pays. The benchmark measures pgvault as installed.
    """
    import compileall

    import pgvault

    compileall.compile_dir(str(Path(pgvault.__file__).parent), quiet=1)


# A subreaper between ``time`` and the command: processes the command leaves behind (pgBackRest's
# local workers outlive the main process that forked them) are reparented to it and reaped, so
# ``time`` counts their CPU too. Not for commands that leave a server running (pg_ctl start).
_REAPER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[1], sys.argv[1:])\n"
    "rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        break\n"
    "sys.exit(rc if rc >= 0 else 128 - rc)\n"
)


def run(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    shell: bool = False,
    reap_orphans: bool = False,
    server_pid: int | None = None,
) -> Sample:
    """Run ``argv`` (a bash pipeline when ``shell``), fail loudly on a non-zero exit.

    With ``reap_orphans`` the CPU of processes the command leaves behind is counted as well
    (see ``_REAPER``); the command must not leave a process running.

    The command runs under GNU ``time``: Linux carries a parent's peak RSS over fork and exec, so
    a child forked straight from this (large) Python process would report our memory, not its
    own. ``time`` is a small process, so the peak it reports is the command's.

    With ``server_pid`` (a postmaster's) the sample also carries the server's CPU meanwhile
    (:func:`server_cpu`: the command's backends, once their connections close, and the
    server's own helpers).
    """
    cmd = ["bash", "-o", "pipefail", "-c", argv[0]] if shell else list(argv)
    if reap_orphans:
        cmd = ["/usr/bin/python3", "-c", _REAPER, *cmd]
    server_before = server_cpu(server_pid) if server_pid else None
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M %U %S", "-o", report.name, *cmd],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(
                f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}"
            )
        max_rss_kb, user, system = report.read().split()[-3:]
    server = None
    if server_pid and server_before is not None:
        time.sleep(0.2)  # the last backends exit (and are reaped) just after their client
        server = server_cpu(server_pid) - server_before
    return Sample(
        wall=wall,
        cpu=float(user) + float(system),
        max_rss_mb=int(max_rss_kb) / 1024,
        server_cpu=server,
    )


def server_cpu(pid: int) -> float:
    """CPU seconds of a postmaster ``pid`` and of every child it has: those it has reaped
    (exited backends, through its ``cutime``/``cstime``) and those still running (their own
    ``utime``/``stime``: the checkpointer, the writers, backends not yet gone)."""
    total = sum(int(f) for f in _stat(pid)[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (the state is the first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@attrs.frozen
class Result:
    """Medians over repetitions of one method."""

    name: str
    wall: float
    cpu: float
    max_rss_mb: float
    output_bytes: int | None
    reps: int
    server_cpu: float | None = None


def summarize(name: str, samples: list[Sample]) -> Result:
    """Medians of ``samples`` (output size from the last one)."""
    return Result(
        name=name,
        wall=statistics.median(s.wall for s in samples),
        cpu=statistics.median(s.cpu for s in samples),
        max_rss_mb=max(s.max_rss_mb for s in samples),
        output_bytes=samples[-1].output_bytes,
        reps=len(samples),
        server_cpu=(
            statistics.median(s.server_cpu for s in samples if s.server_cpu is not None)
            if any(s.server_cpu is not None for s in samples)
            else None
        ),
    )


def load_summary(samples: list[float]) -> dict[str, Any]:
    """The 1-minute load averages sampled during a run, as every result file records them."""
    return {
        "min": round(min(samples), 2),
        "median": round(statistics.median(samples), 2),
        "max": round(max(samples), 2),
        "cores": os.cpu_count(),
    }
