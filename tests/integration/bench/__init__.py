"""The benchmarks' parts that serve or spawn."""
