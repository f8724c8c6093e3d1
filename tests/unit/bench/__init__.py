"""The benchmarks' pure parts."""
