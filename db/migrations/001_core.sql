-- Merchants, payments and refunds: the rows the API writes and CDC streams.
-- Money is BIGINT minor units plus a lower-case ISO 4217 code, from day one.

CREATE TABLE merchants (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    -- sha256 of the API key; the key itself is shown once and never stored.
    api_key_hash    text NOT NULL UNIQUE,
    webhook_url     text,
    webhook_secret  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments (
    id                        text PRIMARY KEY,
    merchant_id               text NOT NULL REFERENCES merchants (id),
    amount                    bigint NOT NULL CHECK (amount > 0 AND amount <= 99999999),
    currency                  text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    status                    text NOT NULL DEFAULT 'pending' CHECK (status IN (
                                  'pending', 'processing', 'requires_action',
                                  'succeeded', 'failed', 'canceled', 'blocked')),
    customer                  text NOT NULL,
    payment_method            text NOT NULL,
    description               text,
    metadata                  jsonb NOT NULL DEFAULT '{}',
    amount_refunded           bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    stripe_payment_intent_id  text UNIQUE,
    failure_code              text,
    failure_message           text,
    -- The last line of idempotency: whatever Redis does, one key makes one row.
    idempotency_key           text,
    request_fingerprint       text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_refund_le_amount CHECK (amount_refunded <= amount),
    CONSTRAINT payments_idempotency UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX payments_merchant_list ON payments (merchant_id, created_at DESC, id DESC);
CREATE INDEX payments_open ON payments (status)
    WHERE status IN ('pending', 'processing', 'requires_action');

CREATE TABLE refunds (
    id                  text PRIMARY KEY,
    payment_id          text NOT NULL REFERENCES payments (id),
    merchant_id         text NOT NULL REFERENCES merchants (id),
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    status              text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'succeeded', 'failed')),
    stripe_refund_id    text UNIQUE,
    failure_code        text,
    failure_message     text,
    idempotency_key     text,
    request_fingerprint text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_idempotency UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX refunds_payment ON refunds (payment_id);
