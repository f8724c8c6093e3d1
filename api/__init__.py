"""PayStream's HTTP API: one Postgres transaction per write, reads through the replicas."""
