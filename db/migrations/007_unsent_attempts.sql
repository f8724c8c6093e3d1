-- Attempts at a Stripe create that certainly never reached Stripe (the circuit
-- breaker held them back, or 429s outlasted our patience). A new attempt looks
-- for what an earlier one may have created only when some earlier attempt may
-- have reached Stripe: without Stripe's search API (localstripe) that look-up
-- lists every charge since the first attempt, which after an outage is most of
-- the backlog, once per object.

ALTER TABLE stripe_submissions
    ADD COLUMN IF NOT EXISTS unsent_attempts integer NOT NULL DEFAULT 0
    CHECK (unsent_attempts >= 0);
