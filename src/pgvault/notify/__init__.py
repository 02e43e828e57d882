"""Built-in notifiers (webhook, healthchecks, email, telegram) and the notifier contract.

Each built-in is its own pluggy plugin in the ``pgvault`` entry-point group, exactly as a third
party's would be; :mod:`pgvault.notify.api` holds what they share.
"""

from pgvault.notify.api import Event, Notifier, NotifierPlugin, deliver, notifier_types

__all__ = ["Event", "Notifier", "NotifierPlugin", "deliver", "notifier_types"]
