"""``pgvault schedule``: a pipeline's ``[schedule]`` as crontab lines or systemd units.

What it prints must work when pasted, not only in the shell that printed it: cron starts jobs
with a near-empty environment (``PATH=/usr/bin:/bin``), and systemd wants absolute paths. So
every command names the interpreter or ``pgvault`` script actually installed (the one running
now, by ``sys.executable``, never resolved through symlinks: a venv's ``bin/python`` is a
symlink whose target is outside the venv), the config by its absolute path, and cron lines run
under ``env -i`` with an explicit ``PATH``, ``HOME`` and ``LANG`` so that the cron daemon's own
environment (which differs between cronie, Debian's cron and busybox) does not matter.

Healthchecks: pgvault's own ``healthchecks`` notifier pings a check's URL at the start, success
and failure of the jobs whose events it wants (backups, by default). The generated jobs then
add no ping of their own, which would double every ping and pair badly with the notifier's run
ids. Only a backup job whose healthchecks notifiers all leave out ``backup_succeeded`` gets a
success ping after the run (from ``url_env``'s variable, so the URL stays out of the unit).
Other jobs never ping a backup's check URL: a check or prune succeeding would hide a backup
that stopped.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from pgvault.exceptions import ConfigError
from pgvault.units import CronSpec

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

__all__ = ["Installation", "Job", "crontab", "jobs", "render_units", "systemd_units"]

_JOB_COMMANDS: dict[str, tuple[str, ...]] = {
    "backup": ("run",),
    "prune": ("prune",),
    "check": ("check",),
    "drill": ("drill",),
    "report": ("report", "--notify"),
}
_JOB_WORDS = {
    "backup": "backup",
    "prune": "prune",
    "check": "health check",
    "drill": "restore drill",
    "report": "report",
}
# The success events by which pgvault's healthchecks notifier pings for a job itself.
_SUCCESS_EVENTS = {
    "backup": "backup_succeeded",
    "prune": "prune_done",
    "drill": "drill_succeeded",
    "report": "report",
}
_SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")


def _tool(name: str) -> str:
    """A coreutils or curl binary by absolute path, looked up where cron's PATH looks."""
    return shutil.which(name, path="/usr/bin:/bin") or f"/usr/bin/{name}"


@attrs.frozen
class Installation:
    """Where and as whom the scheduled jobs run: the facts a crontab line or unit spells out.

    :meth:`current` reads them from this process; tests and packagers may build one directly.
    """

    command: tuple[str, ...]
    """How to start pgvault: an absolute ``pgvault`` script, or ``python -m pgvault``."""
    path: str
    """``PATH`` of the jobs: pgvault's folder, the PostgreSQL client tools' one, the system's."""
    user: str
    """The user the jobs run as (cron.d's user field, systemd's ``User=``)."""
    home: str
    """That user's home (libpq reads ``~/.pgpass`` there)."""
    env_file: Path | None = None
    """``KEY=value`` lines (secrets: ``HC_PING_URL``, ``SMTP_PASSWORD``) read before each job."""
    lang: str = "C.UTF-8"

    @classmethod
    def current(cls, *, user: str | None = None, env_file: Path | None = None) -> Installation:
        """This interpreter's pgvault, run as ``user`` (default: whoever runs this)."""
        # absolute, not resolve: a venv's python is a symlink out of the venv.
        python = Path(sys.executable).absolute()
        beside = python.with_name("pgvault")
        if beside.is_file() and os.access(beside, os.X_OK):
            command: tuple[str, ...] = (str(beside),)
        else:
            command = (str(python), "-m", "pgvault")
        folders = [str(python.parent)]
        pg_dump = shutil.which("pg_dump")
        if pg_dump:
            # Tools found on this shell's PATH only (not in /usr/lib/postgresql/N/bin, which
            # pgvault searches itself) would be missing from cron's.
            folders.append(str(Path(pg_dump).absolute().parent))
        extra = [f for f in folders if f not in _SYSTEM_PATH]
        path = ":".join(dict.fromkeys([*extra, *_SYSTEM_PATH]))
        if user is None:
            entry = pwd.getpwuid(os.getuid())
        else:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise ConfigError(f"--user {user}: no such user on this host") from None
        return cls(command, path, entry.pw_name, entry.pw_dir, env_file)


@attrs.frozen
class Job:
    """One scheduled job of a pipeline, as both schedulers start it."""

    name: str
    """``backup``, ``prune``, ``check``, ``drill`` or ``report``."""
    spec: CronSpec
    argv: tuple[str, ...]
    """The command, absolute: ``/opt/pgvault/bin/pgvault run /etc/pgvault/app.toml``."""
    description: str
    ping_env: str | None = None
    """The variable holding a healthchecks URL to ping after success (see the module docs)."""
    note: str | None = None
    """Why the job pings or does not, for a comment above it."""


def jobs(config: PipelineConfig, installation: Installation) -> tuple[Job, ...]:
    """The pipeline's scheduled jobs; ConfigError naming ``[schedule]`` when there is none."""
    scheduled = config.schedule.jobs()
    if not scheduled:
        raise ConfigError(
            'nothing is scheduled: add a [schedule] table, e.g. backup = "30 2 * * *"',
            path=config.where(),
            key="schedule",
        )
    if config.path is None:
        raise ConfigError("a schedule needs the config's file (it was built in code)")
    config_path = str(config.path.absolute())
    checks = [
        (i, n) for i, n in enumerate(config.notify) if getattr(n, "type_name", "") == "healthchecks"
    ]
    found = []
    for name, spec in scheduled:
        ping_env = note = None
        event = _SUCCESS_EVENTS.get(name)
        pinging = [i for i, n in checks if event is not None and n.wants(event)]  # type: ignore[arg-type]
        if pinging:
            which = ", ".join(f"notify[{i}]" for i in pinging)
            note = f"healthchecks: pgvault's notifier ({which}) pings this job itself"
        elif name == "backup" and checks:
            index, notifier = checks[0]
            ping_env = getattr(notifier, "url_env", None)
            note = (
                f"healthchecks: notify[{index}] does not ping backup_succeeded, so the job does"
                if ping_env
                else f"healthchecks: notify[{index}] gives its URL in the file; set url_env "
                "to have the job ping it"
            )
        verb, *options = _JOB_COMMANDS[name]
        argv = (*installation.command, verb, config_path, *options)
        description = f"pgvault {_JOB_WORDS[name]} of {config.name} ({config_path})"
        found.append(Job(name, spec, argv, description, ping_env, note))
    return tuple(found)


def _seconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds()))


# --- cron ---


def _cron_escape(line: str) -> str:
    # In a crontab, an unescaped % ends the command (the rest becomes its stdin).
    return line.replace("%", r"\%")


def _cron_command(job: Job, config: PipelineConfig, installation: Installation) -> str:
    schedule = config.schedule
    command = shlex.join(job.argv)
    if schedule.timeout is not None:
        # SIGTERM first: pgvault stops pg_dump and removes what it stored; KILL 2 min later.
        command = f"{_tool('timeout')} --kill-after=120 {_seconds(schedule.timeout)} {command}"
    # stdout (a backup id, the prune table, check's OK line) is noise in cron's mail; errors
    # and warnings go to stderr, which cron mails. check prints its problems on stdout: shown
    # only when it is not OK.
    if job.name == "check":
        script = f'out=$({command}) || {{ code=$?; echo "$out"; exit $code; }}'
    else:
        script = f"{command} >/dev/null"
        if job.ping_env:
            script += f' && {_tool("curl")} -fsS -m 10 --retry 3 -o /dev/null "${job.ping_env}"'
    prefix = []
    if installation.env_file is not None:
        env_file = shlex.quote(str(installation.env_file))
        prefix.append(f"set -a; . {env_file}; set +a")
    if _seconds(schedule.randomized_delay):
        prefix.append(
            f"{_tool('sleep')} $({_tool('shuf')} -i 0-{_seconds(schedule.randomized_delay)} -n 1)"
        )
    script = "; ".join([*prefix, script])
    env = (
        f"env -i PATH={shlex.quote(installation.path)} HOME={shlex.quote(installation.home)} "
        f"LANG={installation.lang}"
    )
    return _cron_escape(f"{env} /bin/sh -c {shlex.quote(script)}")


def crontab(config: PipelineConfig, installation: Installation) -> str:
    """An ``/etc/cron.d`` file (with the user field) starting each scheduled job."""
    found = jobs(config, installation)
    lines = [
        f"# pgvault schedule of {config.name!r} from {(config.path or Path()).absolute()}",
        f"# Install as /etc/cron.d/pgvault-{config.name.replace('.', '_')} "
        "(cron.d ignores file names with a dot).",
        "# Generated by `pgvault schedule --cron`: change [schedule] and generate it again.",
        "SHELL=/bin/sh",
        "",
    ]
    for job in found:
        lines.append(f"# {job.name}: {job.spec.text}")
        if job.note:
            lines.append(f"# {job.note}")
        fields = job.spec.expression
        command = _cron_command(job, config, installation)
        lines.append(f"{fields}  {installation.user}  {command}")
        lines.append("")
    return "\n".join(lines)


# --- systemd ---


def _systemd_span(delta: timedelta) -> str:
    """``6h``, ``90min``, ``45s``: the largest unit that says it exactly."""
    seconds = _seconds(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _systemd_arg(arg: str) -> str:
    """One ``ExecStart=`` word: specifiers (%) and variables ($) kept literal, quoted if needed."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and all(c.isalnum() or c in "/._-+=:,@" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    """A unit setting's value with systemd's % specifiers kept literal."""
    return text.replace("%", "%%")


def _environment(assignment: str) -> str:
    """An ``Environment=`` value: specifiers literal, quoted when it holds a space."""
    text = _literal(assignment)
    if " " in text or '"' in text or "\\" in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _unit_name(config: PipelineConfig, job: Job) -> str:
    return f"pgvault-{config.name}-{job.name}"


def systemd_units(config: PipelineConfig, installation: Installation) -> dict[str, str]:
    """A ``.service`` and a ``.timer`` per scheduled job, by file name."""
    schedule = config.schedule
    units: dict[str, str] = {}
    for job in jobs(config, installation):
        name = _unit_name(config, job)
        service = [
            "[Unit]",
            f"Description={_literal(job.description)}",
            "Wants=network-online.target",
            "After=network-online.target postgresql.service",
            "",
            "[Service]",
            "Type=oneshot",
            f"User={installation.user}",
            f"Environment={_environment('PATH=' + installation.path)}",
            f"Environment=LANG={installation.lang}",
        ]
        if installation.env_file is not None:
            # Required, as the cron line's ". FILE" is: a job without its secrets would fail
            # later and less clearly. One path to the end of the line: spaces need no quotes.
            service.append(f"EnvironmentFile={_literal(str(installation.env_file))}")
        service.append("ExecStart=" + " ".join(_systemd_arg(a) for a in job.argv))
        if job.note:
            service.insert(6, f"# {job.note}")
        if job.ping_env:
            # ${VAR} is systemd's own expansion, from the EnvironmentFile: the URL is no
            # part of the unit.
            service.append(
                f"ExecStartPost={_tool('curl')} -fsS -m 10 --retry 3 -o /dev/null "
                f"${{{job.ping_env}}}"
            )
        if job.name == "backup":
            service += ["Nice=10", "IOSchedulingClass=idle"]
        if schedule.timeout is not None:
            # A oneshot's run is its start-up: TimeoutStartSec bounds it. SIGTERM first, on
            # which pgvault removes what it stored; SIGKILL TimeoutStopSec later.
            service += [
                f"TimeoutStartSec={_systemd_span(schedule.timeout)}",
                "TimeoutStopSec=2min",
            ]
        timer = [
            "[Unit]",
            f"Description=Timer of {_literal(job.description)}",
            "",
            "[Timer]",
            f"# {job.name}: {job.spec.text} (cron: {job.spec.expression})",
            *(f"OnCalendar={c}" for c in job.spec.systemd_calendars()),
        ]
        if _seconds(schedule.randomized_delay):
            timer.append(f"RandomizedDelaySec={_systemd_span(schedule.randomized_delay)}")
        timer += [
            "# A machine that was off at the time runs the job when it boots.",
            "Persistent=true",
            "",
            "[Install]",
            "WantedBy=timers.target",
        ]
        units[f"{name}.service"] = "\n".join(service) + "\n"
        units[f"{name}.timer"] = "\n".join(timer) + "\n"
    return units


def render_units(config: PipelineConfig, units: dict[str, str]) -> str:
    """The units one after another, each headed by its path, then the commands to enable them."""
    parts = [
        f"# pgvault schedule of {config.name!r}, generated by `pgvault schedule --systemd`:",
        "# change [schedule] and generate it again.",
        "",
    ]
    for file_name, text in units.items():
        parts += [f"# /etc/systemd/system/{file_name}", text]
    timers = [f for f in units if f.endswith(".timer")]
    parts += [
        "# Then:",
        "#   systemctl daemon-reload",
        f"#   systemctl enable --now {' '.join(timers)}",
        "",
    ]
    return "\n".join(parts)


def write_units(units: dict[str, str], folder: Path) -> Sequence[Path]:
    """Write ``units`` into ``folder`` (mode 0644, as systemd's own); return the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in units.items():
        path = folder / file_name
        path.write_text(text)
        path.chmod(0o644)
        written.append(path)
    return written
