"""pgvault inside other people's engines, each an optional extra: ``celery.py`` (Celery tasks and
a beat schedule built from the pipelines' ``[schedule]`` tables; ``pip install 'pgvault[celery]'``).

Like the command line, an integration is a caller of the public API (:mod:`pgvault`): it finds
configs, loads them and calls ``pgvault.run`` and its siblings, nothing deeper.
"""
