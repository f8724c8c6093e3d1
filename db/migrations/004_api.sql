-- The API's own bookkeeping: Stripe webhook events already applied.
-- An event id is inserted in the same transaction as the transition it causes,
-- so a redelivered event (Stripe retries, at-least-once) changes nothing.

CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    -- applied | noop | unmatched | ignored: what the event did when first seen.
    outcome      text,
    -- Our payment or refund ids it touched, for tracing a payment's history.
    object_ids   text[] NOT NULL DEFAULT '{}',
    received_at  timestamptz NOT NULL DEFAULT now()
);
-- Stripe stops retrying after three days; rows older than that may be pruned.
CREATE INDEX stripe_events_received ON stripe_events (received_at);
