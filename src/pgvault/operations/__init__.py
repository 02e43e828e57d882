"""User operations over a vault: each command of the CLI is a function here."""
