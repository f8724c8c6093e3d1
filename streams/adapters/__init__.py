"""The worker's ports: Postgres, Stripe, Kafka topics and change events, Faust tables."""
