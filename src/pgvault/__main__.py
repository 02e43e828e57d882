"""``python -m pgvault``: the same as the ``pgvault`` command."""

import sys

from pgvault.cli.app import main

sys.exit(main())
