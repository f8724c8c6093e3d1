"""`paystream trace`: one payment's story gathered from Postgres, Kafka, Stripe and the worker."""
