"""``pgvault report``: what the vault did over a period."""

from __future__ import annotations

import argparse
import json

from pgvault.cli import common
from pgvault.cli.exits import (
    EXIT_OK,
)
from pgvault.exceptions import ConfigError


def cmd_report(args: argparse.Namespace) -> int:
    """``pgvault report``: backups, trends, cost and drills over a period."""
    from pgvault.operations.report.chart import svg
    from pgvault.operations.report.report import build, load_prices
    from pgvault.units import Duration

    config = common.load(args)
    try:
        since = Duration.parse(args.since).delta
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    try:
        prices = load_prices(args.prices)
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--prices {args.prices}: cannot read the price table: {exc}") from None
    report = build(config, since=since, prices=prices)
    chart = svg(report)
    if args.chart:
        args.chart.write_text(chart)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    elif args.format == "html":
        print(report.html(chart))
    else:
        print(report.text(), end="")
    if args.notify:
        from pgvault.cli.commands.schedule import notify_report

        return notify_report(config, report, chart)
    return EXIT_OK
