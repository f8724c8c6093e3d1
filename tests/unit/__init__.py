"""Unit tests: no I/O, no subprocess, no server; microseconds each."""
