"""Nagios performance data for ``pgvault check``: the figures behind the status, for graphs.

Nagios, Icinga, Naemon and check_mk read ``'label'=value[unit];warn;crit;min;max`` pairs after a
``|`` on the status line and graph them (PNP4Nagios, Grafana through InfluxDB). The ranges are
the ``[check]`` thresholds in Nagios range syntax: ``N`` alerts above N, ``N:`` below N.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgvault.operations.check import CheckResult


def _item(
    label: str, value: float, unit: str = "", warn: str = "", crit: str = "", *rest: str
) -> str:
    number = f"{value:.0f}" if float(value).is_integer() else f"{value:.3f}"
    fields = [f"{label}={number}{unit}", warn, crit, *rest]
    return ";".join(fields).rstrip(";")


def perfdata(result: CheckResult) -> str:
    """The performance data of ``result`` (space-separated), ``""`` when nothing was measured."""
    limits = result.thresholds
    items: list[str] = []
    if result.problems and result.problems[0].check in ("sink", "vault") and not result.backups:
        # Nothing was read: a 0 here would draw a false dip in every graph.
        return ""
    min_count = f"{limits.min_count}:" if limits and limits.min_count else ""
    items.append(_item("backups", result.backups, "", min_count, "", "0"))
    newest = result.newest
    if newest is not None:
        age = max(0, round((result.checked_at - newest.started_at).total_seconds()))
        warn = f"{limits.warn_age.delta.total_seconds():.0f}" if limits and limits.warn_age else ""
        crit = f"{limits.max_age.delta.total_seconds():.0f}" if limits else ""
        items.append(_item("age", age, "s", warn, crit, "0"))
        min_size = f"{int(limits.min_size)}:" if limits and limits.min_size is not None else ""
        items.append(_item("size", newest.size, "B", "", min_size, "0"))
        items.append(_item("raw_size", newest.raw_size, "B", "", "", "0"))
    if result.free_bytes is not None:
        warn = ""
        if limits and limits.min_free is not None and result.total_bytes is not None:
            warn = f"{limits.min_free.bytes_of(result.total_bytes)}:"
        total = str(result.total_bytes) if result.total_bytes is not None else ""
        items.append(_item("free", result.free_bytes, "B", warn, "", "0", total))
    if result.wal_newest_at is not None:
        wal_age = max(0, round((result.checked_at - result.wal_newest_at).total_seconds()))
        crit = (
            f"{limits.max_wal_age.delta.total_seconds():.0f}"
            if limits and limits.max_wal_age
            else ""
        )
        items.append(_item("wal_age", wal_age, "s", "", crit, "0"))
    if result.wal_lost is not None:
        items.append(_item("wal_lost", result.wal_lost, "", "", "", "0"))
    items.append(_item("damaged", len(result.damaged), "", "", "", "0"))
    return " ".join(items)
