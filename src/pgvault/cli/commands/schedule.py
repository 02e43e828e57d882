"""The CLI side of scheduled jobs: the ``schedule`` command (crontab lines or systemd units for
a pipeline's ``[schedule]``, see :mod:`pgvault.operations.schedule`) and ``report --notify``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pgvault.cli import common
from pgvault.exceptions import ConfigError

if TYPE_CHECKING:
    from pgvault.operations.report.report import Report
    from pgvault.pipeline_config import PipelineConfig


def cmd_schedule(args: argparse.Namespace) -> int:
    """``pgvault schedule``: print or write what ``args`` asks for; exit 0."""
    from pgvault.operations.schedule import (
        Installation,
        crontab,
        render_units,
        systemd_units,
        write_units,
    )

    config = common.load(args)
    env_file = args.env_file
    if env_file is None and config.path is not None:
        default = config.path.with_suffix(".env")
        env_file = default if default.exists() else None
    if env_file is not None:
        env_file = Path(env_file).absolute()
    installation = Installation.current(user=args.user, env_file=env_file)
    if args.output_dir is not None and not args.systemd:
        raise ConfigError("--output-dir: only with --systemd (cron takes one file: redirect it)")
    if args.cron:
        print(crontab(config, installation), end="")
        return 0
    units = systemd_units(config, installation)
    if args.output_dir is not None:
        for path in write_units(units, args.output_dir):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    print(render_units(config, units), end="")
    return 0


def notify_report(config: PipelineConfig, report: Report, chart_svg: str) -> int:
    """``report --notify``: send the report to each notifier with ``events = ["report"]``.

    Exit 1 when one could not deliver (a scheduled report that silently went nowhere is worth a
    failed job); a config where none asks for reports is a usage error naming the fix.
    """
    from pgvault.notify.api import send_report
    from pgvault.notify.events import report_event

    if not any(n.wants("report") for n in config.notify):
        raise ConfigError(
            '--notify: no [[notify]] table asks for reports: add events = ["report"] to one',
            path=config.where(),
            key="notify",
        )
    config.require_notify_env()
    outcomes = send_report(config, report_event(config, report, chart_svg))
    for notifier, delivered in outcomes:
        # Quiet on success (-v shows it): a weekly cron job mails whatever reaches stderr.
        if delivered:
            logging.getLogger("pgvault.notify").info("report sent: %s", notifier.describe())
        else:
            print(f"pgvault: report NOT sent: {notifier.describe()} (see above)", file=sys.stderr)
    return 0 if all(delivered for _, delivered in outcomes) else 1
