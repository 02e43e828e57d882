"""restore's point-in-time options: each of them, and not --timeout alone, makes a recovery."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pgvault.cli.parser import build_parser
from pgvault.operations.pitr.cli import wanted

NO_CONFIG = cast(Any, None)  # a target option decides before the config is looked at


@pytest.mark.parametrize(
    "options",
    [
        ["--target-time", "2026-12-02T14:32:05Z"],
        ["--target-lsn", "0/3000060"],
        ["--target-name", "before-migration"],
        ["--target-xid", "1234"],
        ["--target-immediate"],
        ["--target-exclusive"],
        ["--target-timeline", "2"],
        ["--target-action", "pause"],
        ["--delete-existing"],
        ["--start"],
        ["--port", "5999"],
        ["--pgvault", "/usr/bin/pgvault"],
        ["--archive"],
    ],
)
def test_each_point_in_time_option_makes_a_recovery(options: list[str]) -> None:
    """Any of restore's point-in-time options hands the restore to point-in-time recovery."""
    args = build_parser().parse_args(["restore", "app", *options])
    assert wanted(args, NO_CONFIG)


def test_timeout_alone_or_no_option_is_an_ordinary_restore() -> None:
    """--timeout only bounds --start; without a target option or --target-dir, no recovery."""
    for options in ([], ["--timeout", "30"]):
        args = build_parser().parse_args(["restore", "app", *options])
        assert not wanted(args, NO_CONFIG)
