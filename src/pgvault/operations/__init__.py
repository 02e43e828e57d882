"""User operations over a vault that are neither a backup run nor a restore: export, cat."""
