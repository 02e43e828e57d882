"""The CLI's ``schedule`` command: print (or write) crontab lines or systemd units for the jobs
of a pipeline's ``[schedule]`` (see :mod:`pgvault.operations.schedule`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pgvault.exceptions import ConfigError
from pgvault.pipeline_config import PipelineConfig


def add_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``schedule`` through the app's ``command(name, help)`` factory."""
    p = command("schedule", "print crontab lines or systemd units for the [schedule] jobs")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cron", action="store_true", help="an /etc/cron.d file")
    kind.add_argument("--systemd", action="store_true", help="a .service and .timer per job")
    p.add_argument("--user", help="user the jobs run as (default: you)")
    p.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="KEY=value file read before each job, for secrets (default: CONFIG's name with "
        ".env, when it exists)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="with --systemd: write the units into DIR (e.g. /etc/systemd/system)",
    )


def run(args: argparse.Namespace, config: PipelineConfig) -> int:
    """Print or write what ``args`` asks for; exit 0."""
    from pgvault.operations.schedule import (
        Installation,
        crontab,
        render_units,
        systemd_units,
        write_units,
    )

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
