"""The vault: what a sink holds for one pipeline, read and checked.

* :mod:`~pgvault.vault.manifest` — the versioned manifest and backup ids;
* :mod:`~pgvault.vault.contents` — the layout; list, show, verify, decoding artifacts with
  integrity checks, what ``latest`` means;
* :mod:`~pgvault.vault.retention` — the retention plan: which backups to keep and why.

``from pgvault.vault import Vault`` (the module this package replaced) still works, with a
:class:`DeprecationWarning`: import from :mod:`pgvault.vault.contents`.
"""

from pgvault._deprecated import moved

__getattr__ = moved(__name__, ("pgvault.vault.contents",), warn_now=False)
