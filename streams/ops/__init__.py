"""What operators run: the books CLI, offsets, ledger rebuild, trace (no worker part imports it)."""
