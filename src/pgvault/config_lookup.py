"""Finding a pipeline config by name, the way operators name a pgBackRest stanza or a Barman server.

``pgvault run app`` reads ``app`` as a file when it is one (a path works exactly as before), and
otherwise looks for ``app.toml`` in each folder of the search path:

* ``$PGVAULT_CONFIG_PATH`` — folders separated by ``:`` (``os.pathsep``), searched in order; or
  by default ``$XDG_CONFIG_HOME/pgvault`` (``~/.config/pgvault``), then ``/etc/pgvault``.

``PGVAULT_CONFIG`` (a path or a name) is the config of commands given none: with it set,
``pgvault list`` means ``pgvault list $PGVAULT_CONFIG``. A config given on the command line wins
when it comes right after the command and names an existing file or a config on the search path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from pgvault.exceptions import ConfigError

CONFIG_ENV = "PGVAULT_CONFIG"
SEARCH_PATH_ENV = "PGVAULT_CONFIG_PATH"
SYSTEM_DIR = Path("/etc/pgvault")

# A name, not a path: no folder separator, no suffix. Anything else is taken as a path.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")


def search_path(env: Mapping[str, str] | None = None) -> list[Path]:
    """The folders a config name is looked up in, in order."""
    env = os.environ if env is None else env
    if env.get(SEARCH_PATH_ENV):
        return [Path(p).expanduser() for p in env[SEARCH_PATH_ENV].split(os.pathsep) if p]
    xdg = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return [Path(xdg).expanduser() / "pgvault", SYSTEM_DIR]


def is_name(text: str) -> bool:
    """Whether ``text`` is a config name (``app``) rather than a path (``app.toml``, ``./app``)."""
    return bool(_NAME.fullmatch(text)) and not text.endswith(".toml")


def find_config(text: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Path:
    """The config file ``text`` means: a path as given, or a name found on the search path.

    A path is returned unchecked, so that reading it reports what is wrong with it as before.
    An unknown name raises :class:`ConfigError`, one line listing every place looked in.
    """
    raw = os.fspath(text)
    path = Path(raw).expanduser()
    if not is_name(raw) or path.exists():
        return path
    looked = [folder / f"{raw}.toml" for folder in search_path(env)]
    for candidate in looked:
        if candidate.is_file():
            return candidate
    places = ", ".join(str(p) for p in [path, *looked])
    raise ConfigError(
        f"no config file {raw!r} and no config named {raw!r}: looked for {places} "
        f"(set {SEARCH_PATH_ENV} to search other folders)"
    )


def _names_a_config(text: str, env: Mapping[str, str]) -> bool:
    try:
        return find_config(text, env).exists()
    except ConfigError:
        return False


def with_default_config(
    argv: Sequence[str],
    commands: Collection[str],
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """``argv`` with ``$PGVAULT_CONFIG`` put after the command when the command takes a config
    and none is given right after it (an existing file or a config found by name)."""
    env = os.environ if env is None else env
    args = list(argv)
    default = env.get(CONFIG_ENV)
    if not default:
        return args
    # Global flags (--debug, -v, -q) take no values: the command is the first other word.
    at = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if at is None or args[at] not in commands:
        return args
    after = args[at + 1] if at + 1 < len(args) else None
    if after is not None and not after.startswith("-") and _names_a_config(after, env):
        return args
    return [*args[: at + 1], default, *args[at + 1 :]]
