"""``pgvault report``: what a pipeline's vault did over a period, read from the vault alone.

Per pipeline: backups taken and failed (failures are recorded in the vault by the run, see
:mod:`pgvault.vault.failures`), the success rate, duration and stored size over time with
their trend (least-squares growth per week), the compression ratio, storage by class and its
monthly cost from a shipped list-price table (``prices.json``; ``--prices FILE`` overrides it),
and the drill history with restore times.
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
from pgvault.operations.drill import last_drills
from pgvault.vault.contents import Vault
from pgvault.vault.failures import read_failures

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

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
            f"{human_bytes(self.stored_bytes)} stored ({grow}), ${self.monthly_cost:.2f}/month"
        )

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
    table = (prices or load_prices()).get(sink_type, {})
    price = table.get(storage_class, table.get("default", 0.0))
    drills = [
        d for d in last_drills(vault) if str(d.get("started_at", "")) >= start.isoformat()[:10]
    ]
    return Report(
        name=config.name,
        location=config.sink.describe(),
        since=start,
        until=now,
        runs=tuple(runs),
        stored_bytes=sum(m.size for m in contents.backups),
        storage_class=storage_class,
        price_per_gib_month=price,
        drills=tuple(reversed(drills)),
    )


report = build
"""The Python API's name for :func:`build` (``pgvault.report(config, since=…)``)."""
