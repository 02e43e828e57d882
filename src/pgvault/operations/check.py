"""The health check: is this vault's newest backup recent, plausible and safely stored?

``pgvault check`` is what cron, Nagios/Icinga, a Kubernetes probe or a Prometheus alert runs, so a
backup job that died is found the day it died, not the day the backup is needed. Thresholds come
from the ``[check]`` table; each failed threshold is one :class:`Problem` with the figure and the
threshold in its message, and the worst decides the Nagios-style status (0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN when the vault cannot be reached or read, so nothing could be checked).

The check reads the vault through the sink, like ``list``: it needs no memory of past runs. It is
the Python API of ``pgvault check`` (module named ``health`` so that ``pgvault.check`` stays the
function): it returns a :class:`CheckResult` and never prints or exits.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import attrs
import pluggy

from pgvault.engine.progress import human_bytes
from pgvault.exceptions import PgVaultError
from pgvault.observability import after_check
from pgvault.operations.perfdata import perfdata
from pgvault.plugin.manager import call_hook
from pgvault.settings import CheckThresholds
from pgvault.units import Duration, human_duration
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import Manifest

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig


class Status(enum.IntEnum):
    """Nagios plugin status; the value is the exit code of ``pgvault check``."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3
    """Nothing could be checked: the sink or the vault cannot be reached or read."""


@runtime_checkable
class ReportsDiskUsage(Protocol):
    """A sink that can tell the free space where it stores (the local sink; SFTP could)."""

    def disk_usage(self) -> tuple[int, int]:
        """``(total, free)`` bytes of the file system the sink writes to."""


@attrs.frozen
class Problem:
    """One threshold that failed: which one, how bad, and a message with figure and threshold."""

    status: Status
    check: str
    """The threshold's key (``max_age``, ``min_count`` …) or ``sink``/``vault``."""
    message: str

    def __str__(self) -> str:
        return f"{self.status.name}: {self.message}"


@attrs.frozen
class CheckResult:
    """The outcome of one check of a vault."""

    name: str
    location: str
    checked_at: datetime
    problems: tuple[Problem, ...]
    """Worst first."""
    backups: int = 0
    """The pipeline's own complete backups (scheduled, not future-dated): what ``min_count``
    and the ``pgvault_backups`` metric count."""
    newest: Manifest | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None
    damaged: tuple[str, ...] = ()
    """Ids of backups whose manifest cannot be used."""
    future: tuple[str, ...] = ()
    """Ids of future-dated backups (not counted)."""
    wal_newest_at: datetime | None = None
    """When the newest archived WAL file was stored (None: no WAL archive, or not read)."""
    wal_lost: int | None = None
    """Segments missing inside the archived WAL ranges."""
    storage: dict[str, Any] = attrs.field(factory=dict)
    """Per destination: location, backups held, bytes per storage class, lagging backup ids
    (see :mod:`pgvault.operations.destinations`)."""
    thresholds: CheckThresholds | None = attrs.field(default=None, eq=False, repr=False)
    """The thresholds judged against (for the Nagios performance data)."""

    @property
    def status(self) -> Status:
        """The worst status among the problems, OK if none."""
        return max((p.status for p in self.problems), default=Status.OK)

    @property
    def ok(self) -> bool:
        """Whether no threshold failed."""
        return not self.problems

    def summary(self) -> str:
        """One line about the vault's state, whatever its status."""
        text = f"vault {self.name!r} at {self.location}: {self.backups} complete backup(s)"
        if self.newest is not None:
            age = human_duration(self.checked_at - self.newest.started_at)
            text += f", newest {self.newest.backup_id} ({age} old, {human_bytes(self.newest.size)})"
        if self.free_bytes is not None:
            text += f", {human_bytes(self.free_bytes)} free"
        if self.wal_newest_at is not None:
            text += f", newest WAL {human_duration(self.checked_at - self.wal_newest_at)} old"
        stored = [
            f"{name} "
            + " + ".join(
                human_bytes(size) + ("" if cls == "-" else f" {cls}")
                for cls, size in sorted(state.get("size_by_class", {}).items())
            )
            for name, state in self.storage.items()
            if state.get("size_by_class")
        ]
        if stored:
            text += "; stored: " + ", ".join(stored)
        return text

    def lines(self) -> list[str]:
        """What ``pgvault check`` prints: each problem on its own line, worst first; or ``OK: …``.

        The first line is the Nagios status line.
        """
        if not self.problems:
            return [f"OK: {self.summary()}"]
        return [str(p) for p in self.problems]

    def nagios_lines(self) -> list[str]:
        """:meth:`lines` with Nagios performance data after ``|`` on the status line."""
        lines = self.lines()
        data = perfdata(self)
        if data:
            lines[0] += f" | {data}"
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``pgvault check --json``)."""
        return {
            "name": self.name,
            "location": self.location,
            "status": self.status.name,
            "exit_code": int(self.status),
            "checked_at": self.checked_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "backups": self.backups,
            "newest": None
            if self.newest is None
            else {
                "backup_id": self.newest.backup_id,
                "started_at": self.newest.started_at.isoformat(timespec="seconds").replace(
                    "+00:00", "Z"
                ),
                "age_seconds": round((self.checked_at - self.newest.started_at).total_seconds()),
                "size": self.newest.size,
                "raw_size": self.newest.raw_size,
            },
            "free_bytes": self.free_bytes,
            "total_bytes": self.total_bytes,
            "damaged": list(self.damaged),
            "future": list(self.future),
            "wal": None
            if self.wal_newest_at is None and self.wal_lost is None
            else {
                "newest_at": None
                if self.wal_newest_at is None
                else self.wal_newest_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "newest_age_seconds": None
                if self.wal_newest_at is None
                else round((self.checked_at - self.wal_newest_at).total_seconds()),
                "lost_segments": self.wal_lost,
            },
            "problems": [
                {"status": p.status.name, "check": p.check, "message": p.message}
                for p in self.problems
            ],
            "destinations": self.storage,
            "summary": self.summary(),
            "perfdata": perfdata(self),
        }


def check(
    config: PipelineConfig,
    *,
    now: datetime | None = None,
    thresholds: CheckThresholds | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
) -> CheckResult:
    """Check the vault of ``config`` against its ``[check]`` thresholds (or ``thresholds``).

    Never raises for the vault's state: an unreachable sink or unlistable vault is an UNKNOWN
    problem in the result (nothing could be checked), an unreadable manifest a WARNING. When the
    status is not OK, the
    ``pgvault_check_failed`` hook fires; with ``metrics_file`` set, the outcome is recorded there
    either way.
    """
    now = now or datetime.now(UTC)
    limits = thresholds or config.check
    result = _evaluate(config, limits, now)
    after_check(config, result)
    if not result.ok:
        call_hook("pgvault_check_failed", pm=plugin_manager, config=config, result=result)
    return result


def _evaluate(config: PipelineConfig, limits: CheckThresholds, now: datetime) -> CheckResult:
    sink = config.sink
    location = sink.describe()

    wal: dict[str, Any] = {}
    wal_problems: list[Problem] = []

    def done(problems: list[Problem], **found: Any) -> CheckResult:
        # Several destinations (issue 15): the others' reachability and lag, sizes per class.
        storage: dict[str, Any] = {}
        problems = problems + wal_problems + destination_problems(config, now, storage)
        problems.sort(key=lambda p: -p.status)
        return CheckResult(
            config.name,
            location,
            now,
            tuple(problems),
            **found,
            **wal,
            storage=storage.get("storage", {}),
            thresholds=limits,
        )

    try:
        sink.check()
    except PgVaultError as exc:
        return done([Problem(Status.UNKNOWN, "sink", f"sink unreachable: {exc}")])
    wal_problems += _wal_problems(config, limits, now, wal)
    try:
        contents = Vault(sink, config.name).contents(now)
    except PgVaultError as exc:
        return done([Problem(Status.UNKNOWN, "vault", f"cannot read the vault: {exc}")])

    problems: list[Problem] = _leftover_problems(config, Vault(sink, config.name), now)
    # --- point-in-time recovery window (issue 14) ---
    from pgvault.operations.pitr.window import window_problems

    problems += [
        Problem(Status.WARNING, "pitr_window", m) for m in window_problems(config, contents)
    ]
    # A damaged manifest or a future-dated backup leaves the others usable (a WARNING, named),
    # and counts for nothing: neither can make a stale vault look fresh.
    for damaged in contents.damaged:
        problems.append(Problem(Status.WARNING, "damaged", f"damaged {damaged}"))
    for future in contents.future:
        ahead = human_duration(future.started_at - now)
        problems.append(
            Problem(
                Status.WARNING,
                "clock",
                f"backup {future.backup_id} is dated {ahead} in the future (a clock ahead?): "
                "it is not counted, not latest and not pruned",
            )
        )
    found: dict[str, Any] = {
        "damaged": tuple(d.backup_id for d in contents.damaged),
        "future": tuple(m.backup_id for m in contents.future),
    }
    free: int | None = None
    total: int | None = None
    if isinstance(sink, ReportsDiskUsage):
        try:
            total, free = sink.disk_usage()
        except (OSError, PgVaultError) as exc:
            problems.append(Problem(Status.WARNING, "min_free", f"cannot read free space: {exc}"))

    # Safety backups (taken by a restore) are of the database being replaced, not of the source:
    # age, size and count are judged on the pipeline's own runs alone.
    own = contents.scheduled
    if not own:
        problems.append(
            Problem(
                Status.CRITICAL,
                "max_age",
                f"no complete backup in vault {config.name!r} at {location} "
                f"(max_age {limits.max_age})",
            )
        )
        return done(problems, free_bytes=free, total_bytes=total, **found)

    newest = own[0]
    age = now - newest.started_at
    if age > limits.max_age.delta:
        problems.append(
            Problem(
                Status.CRITICAL,
                "max_age",
                f"newest complete backup {newest.backup_id} is {human_duration(age)} old "
                f"(max_age {limits.max_age})",
            )
        )
    elif limits.warn_age is not None and age > limits.warn_age.delta:
        problems.append(
            Problem(
                Status.WARNING,
                "warn_age",
                f"newest complete backup {newest.backup_id} is {human_duration(age)} old "
                f"(warn_age {limits.warn_age})",
            )
        )
    if len(own) < limits.min_count:
        problems.append(
            Problem(
                Status.WARNING,
                "min_count",
                f"{len(own)} complete backup(s) in the vault (min_count {limits.min_count})",
            )
        )
    if limits.min_size is not None and newest.size < limits.min_size:
        problems.append(
            Problem(
                Status.CRITICAL,
                "min_size",
                f"newest backup {newest.backup_id} is {human_bytes(newest.size)} "
                f"({newest.size} bytes)"
                f" (min_size {human_bytes(limits.min_size)})",
            )
        )
    if limits.max_shrink is not None and len(own) > 1 and own[1].size > 0:
        previous = own[1]
        shrink = (previous.size - newest.size) * 100 / previous.size
        if shrink > limits.max_shrink:
            problems.append(
                Problem(
                    Status.WARNING,
                    "max_shrink",
                    f"newest backup {newest.backup_id} is {human_bytes(newest.size)}, "
                    f"{shrink:.1f}% smaller than the previous {previous.backup_id} "
                    f"({human_bytes(previous.size)}) "
                    f"(max_shrink {limits.max_shrink:g}%)",
                )
            )
    if free is not None and total is not None:
        if limits.min_free is not None and free < limits.min_free.bytes_of(total):
            problems.append(
                Problem(
                    Status.WARNING,
                    "min_free",
                    f"{human_bytes(free)} free at {location} "
                    f"(min_free {limits.min_free}, {human_bytes(limits.min_free.bytes_of(total))})",
                )
            )
        elif free < newest.size:
            problems.append(
                Problem(
                    Status.WARNING,
                    "min_free",
                    f"{human_bytes(free)} free at {location}, less than the newest backup "
                    f"({human_bytes(newest.size)}): the next backup may not fit",
                )
            )
    if limits.max_drill_age is not None:
        problems += _drill_problems(Vault(sink, config.name), limits.max_drill_age, now)
    return done(
        problems, backups=len(own), newest=newest, free_bytes=free, total_bytes=total, **found
    )


def _leftover_problems(config: PipelineConfig, vault: Vault, now: datetime) -> list[Problem]:
    """Unfinished backup folders older than ``incomplete_grace`` that no live run is writing:
    runs that died and that prune has not cleaned (is it scheduled?). A WARNING naming them."""
    from pgvault.engine.runlock import live_leases
    from pgvault.settings import RetentionPolicy
    from pgvault.vault.retention import started_from_id

    policy = config.retention
    default = cast(Duration, attrs.fields(RetentionPolicy).incomplete_grace.default)
    grace = policy.incomplete_grace if policy is not None else default
    try:
        running = live_leases(vault)
        old = []
        for backup_id in vault.incomplete():
            started = started_from_id(backup_id)
            if started is not None and now - started >= grace.delta and backup_id not in running:
                old.append(backup_id)
    except PgVaultError:
        return []  # the sink's trouble is reported by the checks that need it
    if not old:
        return []
    return [
        Problem(
            Status.WARNING,
            "leftovers",
            f"{len(old)} unfinished backup folder(s) older than incomplete_grace ({grace}): "
            f"{', '.join(old)} (runs that died; pgvault prune removes them)",
        )
    ]


def _drill_problems(vault: Vault, max_drill_age: Duration, now: datetime) -> list[Problem]:
    """A latest drill that failed is CRITICAL (that backup does not restore); no passing drill
    within ``max_drill_age`` is a WARNING."""
    from pgvault.operations.drill import last_drills

    drills = last_drills(vault)
    found: list[Problem] = []
    if drills and not drills[0].get("ok"):
        latest = drills[0]
        found.append(
            Problem(
                Status.CRITICAL,
                "max_drill_age",
                f"latest restore drill {latest.get('drill_id')} "
                f"of backup {latest.get('backup_id')} "
                f"failed: {latest.get('error')}",
            )
        )
    passed = [d for d in drills if d.get("ok")]
    if not passed:
        found.append(
            Problem(
                Status.WARNING,
                "max_drill_age",
                f"no restore drill has passed (max_drill_age {max_drill_age}): run pgvault drill",
            )
        )
        return found
    when = datetime.fromisoformat(str(passed[0]["started_at"]))
    age = now - when
    if age > max_drill_age.delta:
        found.append(
            Problem(
                Status.WARNING,
                "max_drill_age",
                f"last passing restore drill {passed[0].get('drill_id')} "
                f"is {human_duration(age)} old "
                f"(max_drill_age {max_drill_age})",
            )
        )
    return found


def _wal_problems(
    config: PipelineConfig, limits: CheckThresholds, now: datetime, found: dict[str, Any]
) -> list[Problem]:
    """The WAL archive's age and gaps, when the vault has one or ``max_wal_age`` asks for it."""
    from pgvault.wal.archive import WalArchive
    from pgvault.wal.chain import summarize

    try:
        chains = summarize(WalArchive(config.sink, config.name), pg_wal=config.wal.pg_wal)
    except PgVaultError as exc:
        return [Problem(Status.CRITICAL, "max_wal_age", f"cannot read the WAL archive: {exc}")]
    if not chains:
        if limits.max_wal_age is None:
            return []
        return [
            Problem(
                Status.CRITICAL,
                "max_wal_age",
                f"no WAL archived in vault {config.name!r} (max_wal_age {limits.max_wal_age})",
            )
        ]
    problems: list[Problem] = []
    newest = max(
        (c for c in chains if c.newest_at is not None),
        key=lambda c: c.newest_at or now,
        default=None,
    )
    found["wal_newest_at"] = newest.newest_at if newest else None
    found["wal_lost"] = sum(c.lost for c in chains)
    if limits.max_wal_age is not None:
        if newest is None or newest.newest_at is None:
            problems.append(
                Problem(Status.CRITICAL, "max_wal_age", "cannot tell when WAL was last archived")
            )
        elif now - newest.newest_at > limits.max_wal_age.delta:
            age = human_duration(now - newest.newest_at)
            problems.append(
                Problem(
                    Status.CRITICAL,
                    "max_wal_age",
                    f"newest archived WAL file {newest.newest} was stored {age} ago "
                    f"(max_wal_age {limits.max_wal_age}): is archiving failing?",
                )
            )
    if limits.wal_gaps != "ignore":
        status = Status.CRITICAL if limits.wal_gaps == "critical" else Status.WARNING
        for chain in chains:
            lost = [g for g in chain.gaps if g.state == "lost"]
            if not lost:
                continue
            first = lost[0]
            problems.append(
                Problem(
                    status,
                    "wal_gaps",
                    f"{sum(g.count for g in lost)} WAL segment(s) of {chain.cluster} missing from "
                    f"the archive, first {chain.name(first.timeline, first.first)}.."
                    f"{chain.name(first.timeline, first.last)}: recovery cannot pass them "
                    "(take a new base backup)",
                )
            )
    return problems


# --- several destinations (issue 15): the others' reachability and lag, sizes per class


def destination_problems(
    config: PipelineConfig, now: datetime, found: dict[str, Any]
) -> list[Problem]:
    """``check``'s view of the destinations: unreachable ones, lagging ones, and (in ``found``)
    the bytes per storage class of each."""
    from pgvault.operations.destinations import overview
    from pgvault.operations.tiers import sizes_by_class
    from pgvault.vault.manifest import MANIFEST_NAME

    if len(config.destinations) == 1:
        # One destination: its sizes per class from one listing (the manifests were read).
        dest = config.destinations[0]
        prefix = f"{config.name}/backups/"
        try:
            listing = dest.sink.list(prefix)
        except PgVaultError:
            return []  # the primary's own checks report it
        per_backup = sizes_by_class(listing, prefix)
        complete = sum(1 for i in listing if i.key.endswith("/" + MANIFEST_NAME))
        sizes: dict[str, int] = {}
        for per in per_backup.values():
            for name, size in per.items():
                sizes[name] = sizes.get(name, 0) + size
        found["storage"] = {
            dest.name: {
                "location": dest.sink.describe(),
                "required": dest.required,
                "error": None,
                "backups": complete,
                "size_by_class": sizes,
                "lagging": [],
            }
        }
        return []
    try:
        view = overview(config, now)
    except PgVaultError:
        return []  # the primary's own checks report it
    found["storage"] = view.to_dict()
    max_age = config.check.max_age
    problems: list[Problem] = []
    ahead = next((s for s in view.states if s.contents is not None and not s.lag), None)
    for i, state in enumerate(view.states):
        dest = state.destination
        # The primary's reachability and age are the main check's; the others' are judged
        # here: CRITICAL for a required destination, WARNING for one that is not.
        bad = Status.CRITICAL if dest.required else Status.WARNING
        if state.contents is None:
            if i:
                text = f"destination {dest.describe()} unreachable: {state.error}"
                problems.append(Problem(bad, "destination", text))
            continue
        newest = state.contents.latest
        stale = i > 0 and (newest is None or now - newest.started_at > max_age.delta)
        if state.lag:
            source = ahead.destination.name if ahead else "<another>"
            problems.append(
                Problem(
                    bad if stale else Status.WARNING,
                    "lagging",
                    f"destination {dest.name!r} lags: {len(state.lag)} backup(s) newer than its "
                    f"newest, such as {state.lag[0]}: run pgvault copy CONFIG --from {source} "
                    f"--to {dest.name}",
                )
            )
        elif stale:
            what = "no backup" if newest is None else f"newest backup {newest.backup_id} too old"
            text = f"destination {dest.describe()} has {what} (max_age {max_age})"
            problems.append(Problem(bad, "destination", text))
    return problems
