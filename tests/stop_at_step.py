"""Run the ``pgvault`` command, pausing at one step of a restore so a test can signal it there.

``python tests/stop_at_step.py STEP MARKER -- ARGS…`` registers a plugin whose
``pgvault_restore_step`` hook, at step ``STEP``, creates file ``MARKER`` and then waits: the test
waits for the file, sends SIGTERM or SIGINT, and the signal lands exactly at that step, in a
real process, with no sleep racing the restore.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pgvault.cli.app import main
from pgvault.plugin import get_plugin_manager, hookimpl


class StopAt:
    def __init__(self, step: str, marker: Path) -> None:
        self.step = step
        self.marker = marker

    @hookimpl
    def pgvault_restore_step(self, step: str) -> None:
        if step == self.step:
            self.marker.write_text(step)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # the signal ends this wait
                time.sleep(0.05)


if __name__ == "__main__":
    step, marker, sep, *args = sys.argv[1:]
    assert sep == "--"
    get_plugin_manager().register(StopAt(step, Path(marker)))
    sys.exit(main(args))
