"""User operations beyond a backup run: each module is one command's logic (doctor, …)."""
