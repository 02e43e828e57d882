"""User operations over a vault (restore, drill, check, prune …), one package or module each."""
