-- What the stream processors persist: fraud decisions and blocklist, Stripe
-- submission attempts (our guard against double PaymentIntents), and the
-- merchant webhook outbox. None of these stream through CDC.

-- One decision per payment, written before the payment is blocked or sent to
-- Stripe. A redelivered payment keeps its first decision (ON CONFLICT DO NOTHING).
CREATE TABLE fraud_decisions (
    payment_id  text PRIMARY KEY REFERENCES payments (id),
    approved    boolean NOT NULL,
    score       smallint NOT NULL CHECK (score BETWEEN 0 AND 100),
    rules_hit   text[] NOT NULL DEFAULT '{}',
    -- The velocity the rules saw, for explaining a decision later.
    velocity    jsonb NOT NULL DEFAULT '{}',
    decided_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fraud_decisions_blocked_has_rule CHECK (approved OR cardinality(rules_hit) > 0)
);

-- Blocked customers and payment methods, on top of FRAUD_BLOCKED_* in the environment.
CREATE TABLE fraud_blocklist (
    kind        text NOT NULL CHECK (kind IN ('customer', 'payment_method')),
    value       text NOT NULL,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);

-- One row per payment or refund we sent to Stripe. A worker takes a lease
-- before calling Stripe, so two workers (or a redelivery racing the poller)
-- never create two PaymentIntents; attempts > 1 means an earlier attempt may
-- have created one, which is then looked up by metadata before creating again.
CREATE TABLE stripe_submissions (
    object_type  text NOT NULL CHECK (object_type IN ('payment', 'refund')),
    object_id    text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_until  timestamptz,
    stripe_id    text,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (object_type, object_id)
);

-- The merchant webhook outbox. event_id derives from (object, status), so a
-- redelivered change event inserts nothing; payload is the exact body sent on
-- every attempt (text, not jsonb, which would reorder keys).
CREATE TABLE merchant_notifications (
    event_id          text PRIMARY KEY,
    merchant_id       text NOT NULL REFERENCES merchants (id),
    event_type        text NOT NULL,
    object_id         text NOT NULL,
    payload           text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_until       timestamptz,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz
);
CREATE INDEX merchant_notifications_due ON merchant_notifications (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX merchant_notifications_object ON merchant_notifications (object_id);
CREATE INDEX merchant_notifications_merchant ON merchant_notifications (merchant_id, created_at);
