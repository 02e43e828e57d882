"""What the command handlers share: loading the config, one-line errors, the progress line.

Cheap at import time (:mod:`pgvault.cli.app` uses it before any command runs, and ``--help``
must not pay for logging and settings): what the functions need is imported inside them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgvault.engine.progress import TerminalProgress
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault")

INTERNAL = "internal error (please report it): "
"""The prefix of an error that is a bug, not a user mistake."""

NOTIFYING = {"run", "prune", "check", "drill"}
"""Commands that may send notifications: they need the notifiers' secrets up front."""


def stderr(line: str, level: int = logging.ERROR) -> None:
    """One line to stderr; with its journald priority (``<3>``) under systemd."""
    from pgvault.observability import journal_prefix

    print(f"{journal_prefix(level)}{line}", file=sys.stderr)


def report(args: argparse.Namespace, exc: BaseException, prefix: str = "") -> None:
    """A failure as one ``pgvault: error:`` line (and its traceback under ``--debug``)."""
    if args.debug:
        traceback.print_exception(exc)
    text = str(exc).replace("\n", " ") or type(exc).__name__
    stderr(f"pgvault: error: {prefix}{text}")


def load(args: argparse.Namespace) -> PipelineConfig:
    """The command's pipeline config, with the config's ``[logging]`` set up."""
    from pgvault.config import load_config
    from pgvault.config_lookup import find_config
    from pgvault.exceptions import ConfigError
    from pgvault.observability import setup_logging

    config = load_config(find_config(args.config))
    if args.command in NOTIFYING and not getattr(args, "dry_run", False):
        config.require_notify_env()
    # The config's [logging] table sets level, format and file; -v, --debug and -q override the
    # level for this one command.
    override = (
        logging.DEBUG
        if args.debug
        else logging.INFO
        if args.verbose
        else logging.WARNING
        if args.quiet
        else None
    )
    try:
        setup_logging(config.logging, stderr_level=override, caller_reports=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot open log file: {exc.strerror or exc}", path=config.where(), key="logging.file"
        ) from exc
    return config


def progress(args: argparse.Namespace, label: str) -> TerminalProgress | None:
    """The progress line on a terminal, unless ``--quiet``."""
    from pgvault.engine.progress import TerminalProgress

    if args.quiet or not TerminalProgress.wanted():
        return None
    return TerminalProgress(label)
