"""User operations that read a vault and act on it (restores, drills, checks)."""
