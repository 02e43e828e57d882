"""The events notifiers receive: the :class:`Event` value, and what each hook's event says.

A hook gets what happened in pgvault's own terms (a manifest, a prune or drill result, an error);
the builders here turn each into one :class:`Event`, its one-line title, its details and its
machine-readable fields, and the scheduled report into its event with the HTML table and the
chart attached. :mod:`pgvault.notify.api` delivers them (and re-exports the event types, the
names a notifier's author imports).
"""

from __future__ import annotations

import socket
import typing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

from pgvault.engine.progress import human_bytes

if TYPE_CHECKING:
    from pgvault.operations.check import CheckResult
    from pgvault.operations.drill import DrillResult
    from pgvault.operations.prune import PruneResult
    from pgvault.operations.report.report import Report
    from pgvault.operations.restore.database import RestoreResult
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.vault.manifest import Manifest

EventName = Literal[
    "backup_started",
    "backup_succeeded",
    "backup_failed",
    "prune_done",
    "check_failed",
    "drill_succeeded",
    "drill_failed",
    "restore_started",
    "restore_succeeded",
    "restore_failed",
    "report",
]
EVENTS: tuple[EventName, ...] = typing.get_args(EventName)
"""Every event a notifier can ask for in its ``events`` option."""
FAILURES: tuple[EventName, ...] = ("backup_failed", "check_failed", "drill_failed")
"""The default ``events``: what someone must act on."""


@attrs.frozen
class Attachment:
    """A file sent with an event by notifiers that can (email): the report's chart."""

    filename: str
    content_type: str
    """``image/svg+xml`` …"""
    data: bytes
    content_id: str | None = None
    """Set when the event's ``html`` shows it inline (``<img src="cid:…">``)."""


@attrs.frozen
class Event:
    """One thing worth telling someone about, ready to render.

    ``title`` is a one-line summary, ``text`` the details (several lines), ``fields`` the same
    facts for machines (ids, sizes, statuses).
    """

    name: EventName
    vault: str
    ok: bool
    title: str
    text: str = ""
    run_id: str | None = None
    """The backup id for backup events, ``None`` for others."""
    fields: dict[str, Any] = attrs.field(factory=dict)
    time: datetime = attrs.field(factory=lambda: datetime.now(UTC))
    host: str = attrs.field(factory=socket.gethostname)
    html: str | None = None
    """An HTML rendering of ``text`` (the report's table and chart), for notifiers that mail."""
    attachments: tuple[Attachment, ...] = ()
    """Files for notifiers that can send them (email); chats ignore them."""
    brief: bool = False
    """Chat notifiers (Slack, Telegram, apprise) send only ``title``: ``text`` is a whole report."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form posted by the webhook notifier."""
        return {
            "event": self.name,
            "vault": self.vault,
            "ok": self.ok,
            "run_id": self.run_id,
            "message": self.title,
            "text": self.text,
            "host": self.host,
            "time": self.time.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "fields": self.fields,
        }

    def body(self) -> str:
        """Title, details and host as plain text (mail body, chat message)."""
        parts = [self.title]
        if self.text:
            parts.append(self.text)
        parts.append(f"host: {self.host}")
        return "\n\n".join(parts)


# Events from hook arguments


def _error_text(error: BaseException) -> str:
    return str(error).replace("\n", " ") or type(error).__name__


def backup_started(config: PipelineConfig, backup_id: str) -> Event:
    """The event for hook ``pgvault_backup_started``."""
    return Event(
        "backup_started",
        config.name,
        True,
        f"pgvault: backup of {config.name} started ({backup_id})",
        run_id=backup_id,
        fields={"backup_id": backup_id},
    )


def backup_succeeded(config: PipelineConfig, manifest: Manifest) -> Event:
    """The event for hook ``pgvault_backup_succeeded``."""
    return Event(
        "backup_succeeded",
        config.name,
        True,
        f"pgvault: backup of {config.name} succeeded: {manifest.backup_id}, "
        f"{human_bytes(manifest.size)} in {manifest.duration_seconds:.1f}s",
        text=(
            f"backup: {manifest.backup_id}\nkind: {manifest.kind}\n"
            f"stored: {human_bytes(manifest.size)} ({manifest.size} bytes)\n"
            f"raw: {human_bytes(manifest.raw_size)} ({manifest.raw_size} bytes)\n"
            f"duration: {manifest.duration_seconds:.1f}s\nartifacts: {len(manifest.artifacts)}"
        ),
        run_id=manifest.backup_id,
        fields={
            "backup_id": manifest.backup_id,
            "kind": manifest.kind,
            "size": manifest.size,
            "raw_size": manifest.raw_size,
            "duration_seconds": round(manifest.duration_seconds, 3),
        },
    )


def backup_failed(config: PipelineConfig, backup_id: str, error: BaseException) -> Event:
    """The event for hook ``pgvault_backup_failed``."""
    text = _error_text(error)
    return Event(
        "backup_failed",
        config.name,
        False,
        f"pgvault: backup of {config.name} FAILED: {text}",
        text=f"backup: {backup_id}\nerror: {text}",
        run_id=backup_id,
        fields={"backup_id": backup_id, "error": text, "error_type": type(error).__name__},
    )


def prune_done(config: PipelineConfig, result: PruneResult) -> Event:
    """The event for hook ``pgvault_prune_done``."""
    failed = len(result.failures)
    title = (
        f"pgvault: prune of {config.name}: kept {len(result.plan.kept)}, "
        f"removed {len(result.removed)}" + (f", {failed} FAILED" if failed else "")
    )
    lines = [f"removed {i}" for i in result.removed]
    lines += [f"could not remove {f.backup_id}: {f.message}" for f in result.failures]
    return Event(
        "prune_done",
        config.name,
        not failed,
        title,
        text="\n".join(lines),
        fields={
            "kept": len(result.plan.kept),
            "removed": list(result.removed),
            "failures": [f.backup_id for f in result.failures],
        },
    )


def check_failed(config: PipelineConfig, result: CheckResult) -> Event:
    """The event for hook ``pgvault_check_failed``."""
    first = result.problems[0].message if result.problems else ""
    return Event(
        "check_failed",
        config.name,
        False,
        f"pgvault: check of {config.name} {result.status.name}: {first}",
        text="\n".join([*result.lines(), "", result.summary()]),
        fields={
            "status": result.status.name,
            "problems": [
                {"status": p.status.name, "check": p.check, "message": p.message}
                for p in result.problems
            ],
        },
    )


def drill_succeeded(config: PipelineConfig, result: DrillResult) -> Event:
    """The event for hook ``pgvault_drill_succeeded``."""
    return Event(
        "drill_succeeded",
        config.name,
        True,
        f"pgvault: restore drill of {config.name} succeeded: backup {result.backup_id} "
        f"restored and checked in {result.duration_seconds:.1f}s",
        text=f"backup: {result.backup_id}\ndrill: {result.drill_id}\nserver: {result.server}",
        run_id=result.backup_id,
        fields={
            "backup_id": result.backup_id,
            "drill_id": result.drill_id,
            "duration_seconds": round(result.duration_seconds, 3),
        },
    )


def drill_failed(config: PipelineConfig, result: DrillResult) -> Event:
    """The event for hook ``pgvault_drill_failed``."""
    text = (result.error or "failed").replace("\n", " ")
    return Event(
        "drill_failed",
        config.name,
        False,
        f"pgvault: restore drill of {config.name} FAILED: {text}",
        text=f"backup: {result.backup_id}\ndrill: {result.drill_id}\nerror: {text}",
        run_id=result.backup_id,
        fields={"backup_id": result.backup_id, "drill_id": result.drill_id, "error": text},
    )


def restore_started(config: PipelineConfig, backup_id: str, target: str) -> Event:
    """The event for hook ``pgvault_restore_started``."""
    return Event(
        "restore_started",
        config.name,
        True,
        f"pgvault: restore of {config.name} backup {backup_id} into {target} started",
        run_id=backup_id,
        fields={"backup_id": backup_id, "target": target},
    )


def restore_succeeded(config: PipelineConfig, result: RestoreResult) -> Event:
    """The event for hook ``pgvault_restore_succeeded``."""
    lines = [f"backup: {result.backup_id}", f"target: {result.target}"]
    if result.safety_backup_id:
        lines.append(f"safety backup of the replaced database: {result.safety_backup_id}")
    lines += [f"note: {n}" for n in result.notes]
    return Event(
        "restore_succeeded",
        config.name,
        True,
        f"pgvault: restore of {config.name} backup {result.backup_id} succeeded",
        text="\n".join(lines),
        run_id=result.backup_id,
        fields={
            "backup_id": result.backup_id,
            "target": result.target,
            "safety_backup_id": result.safety_backup_id,
        },
    )


def restore_failed(
    config: PipelineConfig, backup_id: str, target: str, error: BaseException
) -> Event:
    """The event for hook ``pgvault_restore_failed``."""
    text = _error_text(error)
    return Event(
        "restore_failed",
        config.name,
        False,
        f"pgvault: restore of {config.name} backup {backup_id} into {target} FAILED: {text}",
        text=f"backup: {backup_id}\ntarget: {target}\nerror: {text}",
        run_id=backup_id,
        fields={
            "backup_id": backup_id,
            "target": target,
            "error": text,
            "error_type": type(error).__name__,
        },
    )


REPORT_CHART_ID = "pgvault-report-chart"
"""The Content-ID of the chart in a report mail (``<img src="cid:…">`` in its HTML)."""


def report_event(config: PipelineConfig, report: Report, chart_svg: str | None = None) -> Event:
    """The ``report`` event of a scheduled report: its summary line as the title (all a chat
    shows), the text report, and for mail the HTML table with the chart inline."""
    drills_failed = sum(1 for d in report.drills if not d.get("ok"))
    attachments: tuple[Attachment, ...] = ()
    chart_html = None
    if chart_svg:
        attachments = (
            Attachment("chart.svg", "image/svg+xml", chart_svg.encode(), REPORT_CHART_ID),
        )
        chart_html = f'<p><img src="cid:{REPORT_CHART_ID}" alt="stored size and duration"></p>'
    return Event(
        "report",
        config.name,
        report.failed == 0 and drills_failed == 0,
        f"pgvault: report {report.summary()}",
        text=report.text().rstrip("\n"),
        fields=report.to_dict(),
        html=report.html(chart_html),
        attachments=attachments,
        brief=True,
    )
