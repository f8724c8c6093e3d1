"""PayStream's stream processors: Faust agents driven by the Debezium change stream."""
