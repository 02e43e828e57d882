"""The examples of docs/scheduling.md, made by the code of ``pgvault schedule``.

``python -m tests.operations.schedule_docs`` rewrites them; ``test_schedule.py`` fails when the
page and the code disagree. They are what ``pgvault schedule /etc/pgvault/app.toml --cron --user
postgres`` prints on a host with pgvault installed in the venv /opt/pgvault (the installation is
given here rather than read from the machine running the tests).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import attrs

import pgvault
from pgvault.operations.schedule import Installation, crontab, render_units, systemd_units

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "scheduling.md"
CONFIG_PATH = Path("/etc/pgvault/app.toml")
INSTALLATION = Installation(
    command=("/opt/pgvault/bin/pgvault",),
    path="/opt/pgvault/bin:/usr/local/bin:/usr/bin:/bin",
    user="postgres",
    home="/var/lib/postgresql",
    env_file=Path("/etc/pgvault/app.env"),
)
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n```\w*\n)(.*?)(```\n)", re.S)


def example_config_text(doc: str) -> str:
    """The page's example config: its first ```toml block."""
    m = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert m, "docs/scheduling.md lost its example config"
    return m.group(1)


def generated(doc: str) -> dict[str, str]:
    """What each generated block must hold, from the page's own example config."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "app.toml"
        path.write_text(example_config_text(doc))
        config = attrs.evolve(pgvault.load_config(path, env={}), path=CONFIG_PATH)
    return {
        "cron": crontab(config, INSTALLATION),
        "systemd": render_units(config, systemd_units(config, INSTALLATION)),
    }


def rewrite(doc: str) -> str:
    """The page with every generated block replaced by what the code makes now."""
    blocks = generated(doc)
    return _BLOCK.sub(lambda m: m.group(1) + blocks[m.group(2)] + m.group(4), doc)


if __name__ == "__main__":
    DOC.write_text(rewrite(DOC.read_text()))
