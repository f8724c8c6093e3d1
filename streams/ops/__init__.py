"""What operators run: CLI, dead letters, offsets, web views, reconcile, ledger rebuild."""
