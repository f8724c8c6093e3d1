"""Integration tests: real Postgres, Redis, Kafka, Connect, and child processes."""
