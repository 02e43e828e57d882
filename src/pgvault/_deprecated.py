"""Old module paths kept importable: each warns once and re-exports its new module's names.

Before the tree was arranged by role, every module sat at the top of the package. Code that
imports an old path (``pgvault.restore``, ``pgvault.vault``'s names …) gets a
:class:`DeprecationWarning` naming the new one, and every name of the new module, private ones
included, so nothing breaks before it is updated. The old modules are made on import by a finder
(no files), so ``ls src/pgvault`` shows only the tree as it is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

OLD_PATHS: dict[str, tuple[str, ...]] = {
    "pgvault.keys": ("pgvault.transforms.keys",),
    "pgvault.flow": ("pgvault.engine.flow",),
    "pgvault.pipeline": ("pgvault.engine.pipeline",),
    "pgvault.progress": ("pgvault.engine.progress",),
    "pgvault.runlock": ("pgvault.engine.runlock",),
    "pgvault.manifest": ("pgvault.vault.manifest",),
    "pgvault.retention": ("pgvault.vault.retention",),
    "pgvault.restore": ("pgvault.operations.restore.database",),
    "pgvault.restore_selection": ("pgvault.operations.restore.selection",),
    "pgvault.restore_target": ("pgvault.operations.restore.target",),
    "pgvault.untar": ("pgvault.operations.restore.untar",),
    "pgvault.drill": ("pgvault.operations.drill",),
    "pgvault.health": ("pgvault.operations.check",),
    "pgvault.pruning": ("pgvault.operations.prune",),
    "pgvault.cluster": ("pgvault.postgres.cluster",),
    "pgvault.pg_archive": ("pgvault.postgres.archive",),
    "pgvault.cluster_globals": ("pgvault.postgres.globals",),
    "pgvault.database_props": ("pgvault.postgres.database",),
    "pgvault.cli.storage": ("pgvault.cli.commands.storage", "pgvault.cli.parser"),
}
"""Each old module path and the module(s) that now hold its names, searched in order."""


def moved(old: str, new: Sequence[str], *, warn_now: bool = True) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds names in the modules ``new`` (first match wins).

    With ``warn_now`` the import itself warns (a module that only forwards); otherwise each
    name warns when read (a package, such as :mod:`pgvault.vault`, that is not deprecated but
    whose old names are).
    """
    if warn_now:
        warnings.warn(
            f"{old} is deprecated; import from {' or '.join(new)}", DeprecationWarning, stacklevel=3
        )

    def getattr_(name: str) -> Any:
        for target in new:
            module = importlib.import_module(target)
            if name in vars(module):
                if not warn_now:
                    warnings.warn(
                        f"{old}.{name} is deprecated; import it from {target}",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return getattr_


class _OldPaths:
    """Finder and loader of :data:`OLD_PATHS` (last on ``sys.meta_path``)."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in OLD_PATHS:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)  # type: ignore[arg-type]

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = f"Deprecated module path: use {OLD_PATHS[module.__name__][0]}."
        module.__getattr__ = moved(module.__name__, OLD_PATHS[module.__name__])  # type: ignore[method-assign]


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(_OldPaths())
