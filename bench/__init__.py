"""Benchmarks of the running stack, each run from the checkout as `python -m bench.<name>`."""
