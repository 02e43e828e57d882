"""``pgvault report``: what a pipeline's vault did over a period, read from the vault alone.

Per pipeline: backups taken and failed (failures are recorded in the vault by the run, see
:mod:`pgvault.vault.failures`), the success rate, duration and stored size over time with
their trend (least-squares growth per week), the compression ratio, storage by class and its
monthly cost from a shipped list-price table (``prices.json``; ``--prices FILE`` overrides it),
and the drill history with restore times. Beside these: what each destination stores, by
storage class, and what it costs a month (from the sinks' own listings, WAL included); when
``[check] min_free`` is set on a sink that knows its free space, the days until the vault's
growth crosses it; and when WAL is archived, its volume and the point-in-time recovery window.

The days to ``min_free`` assume the vault grows as its history says. With a ``[retention]``
policy the vault holds about as many backups from week to week, so it grows by the size trend
once per kept backup (plus nothing for WAL, which prune trims alike); without one nothing is
removed, so it grows by everything stored per week, backups and WAL.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.engine.progress import human_bytes
from pgvault.exceptions import PgVaultError
from pgvault.operations.check import ReportsDiskUsage
from pgvault.operations.drill import last_drills
from pgvault.operations.pitr.window import window_lines
from pgvault.vault.contents import Vault
from pgvault.vault.failures import read_failures
from pgvault.wal.archive import WalArchive

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.sinks.destinations import Destination

GIB = 2**30
WEEK = 7 * 86400


def load_prices(path: Path | None = None) -> dict[str, dict[str, float]]:
    """The price table: USD per GiB-month by sink type and storage class."""
    shipped = files("pgvault.operations.report").joinpath("prices.json")
    text = path.read_text() if path else shipped.read_text()
    data = json.loads(text)
    return {
        k: {c: float(p) for c, p in v.items()} for k, v in data.items() if not k.startswith("_")
    }


def trend_per_week(points: list[tuple[datetime, float]]) -> float | None:
    """Least-squares slope of ``points`` per week, ``None`` with fewer than two distinct times."""
    if len(points) < 2:
        return None
    xs = [p[0].timestamp() for p in points]
    ys = [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * WEEK


@attrs.frozen
class Run:
    """One backup (or failed run) in the period."""

    backup_id: str
    started_at: datetime
    ok: bool
    duration_seconds: float | None = None
    size: int | None = None
    raw_size: int | None = None
    error: str | None = None


@attrs.frozen
class DestinationCost:
    """What one destination stores for the vault (backups and WAL), by storage class, and its
    monthly cost at the price table's list prices."""

    name: str
    location: str
    sink_type: str
    bytes_by_class: dict[str, int]
    usd_per_gib_month: dict[str, float]

    @property
    def stored_bytes(self) -> int:
        """Every byte the destination holds for the vault."""
        return sum(self.bytes_by_class.values())

    @property
    def monthly_cost(self) -> float:
        """USD per month for what it stores now."""
        return sum(
            size / GIB * self.usd_per_gib_month.get(cls, 0.0)
            for cls, size in self.bytes_by_class.items()
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "name": self.name,
            "location": self.location,
            "type": self.sink_type,
            "bytes": self.stored_bytes,
            "classes": {
                cls: {
                    "bytes": size,
                    "usd_per_gib_month": self.usd_per_gib_month.get(cls, 0.0),
                    "usd_per_month": round(size / GIB * self.usd_per_gib_month.get(cls, 0.0), 4),
                }
                for cls, size in sorted(self.bytes_by_class.items())
            },
            "usd_per_month": round(self.monthly_cost, 4),
        }


@attrs.frozen
class WalVolume:
    """The archived WAL of the vault: all of it, and what arrived in the report's period."""

    files: int
    bytes: int
    period_files: int
    period_bytes: int
    weeks: float
    """The period's length in weeks, for the rate."""

    @property
    def bytes_per_week(self) -> float:
        """Stored WAL bytes per week over the period."""
        return self.period_bytes / self.weeks if self.weeks else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "files": self.files,
            "bytes": self.bytes,
            "period_files": self.period_files,
            "period_bytes": self.period_bytes,
            "bytes_per_week": round(self.bytes_per_week),
        }


@attrs.frozen
class FreeSpace:
    """Free space where the primary sink stores, against ``[check] min_free``, and when the
    vault's growth crosses it."""

    free_bytes: int
    total_bytes: int
    threshold: str
    """``min_free`` as the config says it (``"10%"``)."""
    threshold_bytes: int
    growth_per_week: float | None
    """The vault's growth (see the module docs); None without a trend."""

    @property
    def days_left(self) -> float | None:
        """Days until free space falls below the threshold: 0 when it is already below, None
        when the vault does not grow (or there is no trend yet)."""
        headroom = self.free_bytes - self.threshold_bytes
        if headroom <= 0:
            return 0.0
        if not self.growth_per_week or self.growth_per_week <= 0:
            return None
        return headroom / (self.growth_per_week / 7)

    def text(self) -> str:
        """``free space: 40.0 GiB (min_free 10%, 25.0 GiB): crossed in about 52 days``."""
        head = (
            f"free space: {human_bytes(self.free_bytes)} of {human_bytes(self.total_bytes)} "
            f"(min_free {self.threshold}, {human_bytes(self.threshold_bytes)})"
        )
        days = self.days_left
        if days == 0:
            return head + ": already below"
        if days is None:
            return head + ": not crossed at the current trend"
        growth = human_bytes(self.growth_per_week or 0)
        return head + f": crossed in about {days:.0f} days (vault growing {growth}/week)"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        days = self.days_left
        return {
            "free_bytes": self.free_bytes,
            "total_bytes": self.total_bytes,
            "min_free": self.threshold,
            "min_free_bytes": self.threshold_bytes,
            "vault_growth_bytes_per_week": self.growth_per_week,
            "days_to_min_free": None if days is None else round(days, 1),
        }


@attrs.frozen
class Report:
    """The report of one pipeline over ``since``…``until``."""

    name: str
    location: str
    since: datetime
    until: datetime
    runs: tuple[Run, ...]
    stored_bytes: int
    storage_class: str
    price_per_gib_month: float
    drills: tuple[dict[str, Any], ...]
    destinations: tuple[DestinationCost, ...] = ()
    """Each destination's storage and cost (empty when built without listing the sinks)."""
    free_space: FreeSpace | None = None
    """Against ``[check] min_free``, when it is set and the sink knows its free space."""
    wal: WalVolume | None = None
    """The archived WAL, when the vault has any."""
    pitr_window: tuple[str, ...] = ()
    """The point-in-time recovery window, one line per cluster and timeline."""
    notes: tuple[str, ...] = ()
    """What could not be read (a sink that failed to list), one line each."""

    @property
    def total_monthly_cost(self) -> float:
        """USD per month over every destination (the primary's backups alone without them)."""
        if self.destinations:
            return sum(d.monthly_cost for d in self.destinations)
        return self.monthly_cost

    @property
    def taken(self) -> int:
        """Successful backups in the period."""
        return sum(r.ok for r in self.runs)

    @property
    def failed(self) -> int:
        """Failed runs in the period."""
        return sum(not r.ok for r in self.runs)

    @property
    def success_rate(self) -> float | None:
        """Share of runs that succeeded, ``None`` without runs."""
        return self.taken / len(self.runs) if self.runs else None

    def _good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def size_growth_per_week(self) -> float | None:
        """Bytes per week the stored size grows (least squares over the period's backups)."""
        return trend_per_week([(r.started_at, float(r.size or 0)) for r in self._good()])

    @property
    def duration_growth_per_week(self) -> float | None:
        """Seconds per week the backup duration grows."""
        return trend_per_week([(r.started_at, r.duration_seconds or 0.0) for r in self._good()])

    @property
    def compression_ratio(self) -> float | None:
        """Raw bytes over stored bytes, summed over the period's backups."""
        stored = sum(r.size or 0 for r in self._good())
        raw = sum(r.raw_size or 0 for r in self._good())
        return raw / stored if stored else None

    @property
    def monthly_cost(self) -> float:
        """USD per month for what the vault stores now, at the table's price."""
        return self.stored_bytes / GIB * self.price_per_gib_month

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``--format json``)."""
        return {
            "name": self.name,
            "location": self.location,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "taken": self.taken,
            "failed": self.failed,
            "success_rate": self.success_rate,
            "size_growth_bytes_per_week": self.size_growth_per_week,
            "duration_growth_seconds_per_week": self.duration_growth_per_week,
            "compression_ratio": self.compression_ratio,
            "storage": {
                "class": self.storage_class,
                "bytes": self.stored_bytes,
                "usd_per_gib_month": self.price_per_gib_month,
                "usd_per_month": round(self.monthly_cost, 4),
            },
            "runs": [
                {**attrs.asdict(r), "started_at": r.started_at.isoformat()} for r in self.runs
            ],
            "drills": list(self.drills),
            "destinations": [d.to_dict() for d in self.destinations],
            "usd_per_month": round(self.total_monthly_cost, 4),
            "free_space": self.free_space.to_dict() if self.free_space else None,
            "wal": self.wal.to_dict() if self.wal else None,
            "pitr_window": list(self.pitr_window),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """One line: the chat message of a scheduled report."""
        rate = "n/a" if self.success_rate is None else f"{self.success_rate:.0%}"
        growth = self.size_growth_per_week
        grow = (
            "n/a"
            if growth is None
            else f"{'+' if growth >= 0 else '-'}{human_bytes(abs(growth))}/week"
        )
        return (
            f"{self.name}: {self.taken} backup(s), {self.failed} failed ({rate} success), "
            f"{human_bytes(self.stored_bytes)} stored ({grow}), "
            f"${self.total_monthly_cost:.2f}/month"
        )

    def _extra_lines(self) -> list[str]:
        """Destinations, free space, WAL and the PITR window, for the text and HTML forms."""
        lines = []
        for d in self.destinations:
            classes = ", ".join(
                f"{cls} {human_bytes(size)}" for cls, size in sorted(d.bytes_by_class.items())
            )
            lines.append(
                f"destination {d.name} ({d.location}): {human_bytes(d.stored_bytes)}"
                + (f" [{classes}]" if set(d.bytes_by_class) - {"default"} else "")
                + f", ${d.monthly_cost:.2f}/month"
            )
        if self.free_space:
            lines.append(self.free_space.text())
        if self.wal:
            lines.append(
                f"WAL: {self.wal.files} file(s), {human_bytes(self.wal.bytes)} stored; "
                f"{self.wal.period_files} ({human_bytes(self.wal.period_bytes)}) in the period, "
                f"{human_bytes(self.wal.bytes_per_week)}/week"
            )
        lines += list(self.pitr_window)
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def text(self) -> str:
        """The plain-text report."""
        ratio = self.compression_ratio
        dgrowth = self.duration_growth_per_week
        lines = [
            f"pgvault report: {self.name} at {self.location}",
            f"period: {self.since:%Y-%m-%d} to {self.until:%Y-%m-%d}",
            self.summary(),
            f"compression: {ratio:.2f}x" if ratio else "compression: n/a",
            "duration trend: n/a" if dgrowth is None else f"duration trend: {dgrowth:+.1f}s/week",
            f"storage: {self.storage_class} at ${self.price_per_gib_month}/GiB-month",
            *self._extra_lines(),
            "",
            f"{'started (UTC)':<17} {'backup':<24} {'result':<7} {'duration':>9} {'stored':>11}",
        ]
        for r in self.runs:
            size = human_bytes(r.size) if r.size is not None else "-"
            took = f"{r.duration_seconds:.1f}s" if r.duration_seconds is not None else "-"
            state = "ok" if r.ok else "FAILED"
            lines.append(
                f"{r.started_at:%Y-%m-%d %H:%M} {r.backup_id:<24} {state:<7} {took:>9} {size:>11}"
                + (f"  {r.error}" if r.error else "")
            )
        if self.drills:
            lines += ["", "drills:"]
            for d in self.drills:
                state = "passed" if d.get("ok") else "FAILED"
                lines.append(
                    f"  {d.get('started_at', '?')}  {d.get('backup_id', '?')}  {state}  "
                    f"restored in {float(d.get('duration_seconds') or 0):.1f}s"
                )
        return "\n".join(lines) + "\n"

    def html(self, chart_svg: str | None = None) -> str:
        """A self-contained HTML page (the email body of a scheduled report)."""
        rows = "".join(
            f"<tr><td>{r.started_at:%Y-%m-%d %H:%M}</td><td>{html.escape(r.backup_id)}</td>"
            f"<td>{'ok' if r.ok else '<b>FAILED</b>'}</td>"
            f"<td>{'' if r.duration_seconds is None else f'{r.duration_seconds:.1f}s'}</td>"
            f"<td>{'' if r.size is None else human_bytes(r.size)}</td>"
            f"<td>{html.escape(r.error or '')}</td></tr>"
            for r in self.runs
        )
        return (
            "<!doctype html><meta charset=utf-8>"
            f"<title>pgvault report {html.escape(self.name)}</title>"
            f"<h1>{html.escape(self.name)}</h1><p>{html.escape(self.summary())}</p>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in self._extra_lines())
            + (chart_svg or "")
            + "<table><tr><th>started (UTC)</th><th>backup</th><th>result</th><th>duration</th>"
            f"<th>stored</th><th>error</th></tr>{rows}</table>"
        )


def build(
    config: PipelineConfig,
    *,
    since: timedelta = timedelta(days=30),
    now: datetime | None = None,
    prices: dict[str, dict[str, float]] | None = None,
) -> Report:
    """The report of ``config``'s vault over the last ``since``."""
    now = now or datetime.now(UTC)
    start = now - since
    vault = Vault.from_config(config)
    contents = vault.contents(now)
    good = [m for m in contents.scheduled if m.started_at >= start]
    runs = [
        Run(m.backup_id, m.started_at, True, m.duration_seconds, m.size, m.raw_size) for m in good
    ]
    runs += [
        Run(f["backup_id"], f["started_at"], False, error=str(f.get("error", "")))
        for f in read_failures(vault)
        if f["started_at"] >= start and f.get("kind", "scheduled") == "scheduled"
    ]
    runs.sort(key=lambda r: r.started_at)
    sink_type = getattr(config.sink, "type_name", "local")
    storage_class = str(getattr(config.sink, "storage_class", None) or "default")
    price_table = prices or load_prices()
    table = price_table.get(sink_type, {})
    price = table.get(storage_class, table.get("default", 0.0))
    drills = [
        d for d in last_drills(vault) if str(d.get("started_at", "")) >= start.isoformat()[:10]
    ]
    notes: list[str] = []
    destinations = []
    for dest in config.destinations:
        try:
            destinations.append(_destination_cost(config.name, dest, price_table))
        except (OSError, PgVaultError) as exc:
            notes.append(f"destination {dest.name}: cannot list what it stores: {exc}")
    wal = _wal_volume(config, start, since, notes)
    pitr = tuple(window_lines(config, contents.scheduled)) if wal else ()
    report = Report(
        name=config.name,
        location=config.sink.describe(),
        since=start,
        until=now,
        runs=tuple(runs),
        stored_bytes=sum(m.size for m in contents.backups),
        storage_class=storage_class,
        price_per_gib_month=price,
        drills=tuple(reversed(drills)),
        destinations=tuple(destinations),
        wal=wal,
        pitr_window=pitr,
        notes=tuple(notes),
    )
    free = _free_space(config, report, len(contents.backups), since, notes)
    return attrs.evolve(report, free_space=free, notes=tuple(notes))


def _destination_cost(
    name: str, dest: Destination, prices: dict[str, dict[str, float]]
) -> DestinationCost:
    sink = dest.sink
    sink_type = str(getattr(sink, "type_name", "local"))
    # What the listing does not name is in the class the sink writes (its storage_class
    # option), else the provider's default.
    written = str(getattr(sink, "storage_class", None) or "default")
    by_class: dict[str, int] = {}
    for info in sink.list(f"{name}/"):
        cls = info.storage_class or written
        by_class[cls] = by_class.get(cls, 0) + info.size
    table = prices.get(sink_type, {})
    rates = {cls: table.get(cls, table.get("default", 0.0)) for cls in by_class}
    return DestinationCost(dest.name, sink.describe(), sink_type, by_class, rates)


def _wal_volume(
    config: PipelineConfig, start: datetime, since: timedelta, notes: list[str]
) -> WalVolume | None:
    archive = WalArchive(config.sink, config.name)
    try:
        clusters = archive.clusters()
        items = [item for record in clusters for item in archive.list(record.cluster)]
    except (OSError, PgVaultError) as exc:
        notes.append(f"WAL archive: cannot be read ({exc})")
        return None
    if not clusters:
        return None
    recent = [i for i in items if i.modified is not None and i.modified >= start]
    return WalVolume(
        files=len(items),
        bytes=sum(i.size for i in items),
        period_files=len(recent),
        period_bytes=sum(i.size for i in recent),
        weeks=since.total_seconds() / WEEK,
    )


def _free_space(
    config: PipelineConfig, report: Report, kept: int, since: timedelta, notes: list[str]
) -> FreeSpace | None:
    threshold = config.check.min_free
    if threshold is None or not isinstance(config.sink, ReportsDiskUsage):
        return None
    try:
        total, free = config.sink.disk_usage()
    except (OSError, PgVaultError) as exc:
        notes.append(f"free space: cannot be read ({exc})")
        return None
    growth: float | None
    if config.retention is not None:
        trend = report.size_growth_per_week
        growth = None if trend is None else trend * kept
    else:
        weeks = since.total_seconds() / WEEK
        stored = sum(r.size or 0 for r in report.runs if r.ok)
        wal = report.wal.period_bytes if report.wal else 0
        growth = (stored + wal) / weeks if weeks else None
    return FreeSpace(free, total, str(threshold), threshold.bytes_of(total), growth)


report = build
"""The Python API's name for :func:`build` (``pgvault.report(config, since=…)``)."""
