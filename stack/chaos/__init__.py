"""Fault injection: kill -9 each component under a steady payment load, `make up`, check the money.

A steady load of payments goes through the API the way a careful client sends
them (every retry reuses its Idempotency-Key), some declined, some refunded.
Meanwhile each component of the profile is killed with SIGKILL in turn and
brought back by one `make up`. When every payment is terminal, the invariants
are checked straight from Postgres and the Stripe peer:

- one payment per Idempotency-Key, and every accepted request has its payment;
- at most one PaymentIntent per payment, none for a payment fraud did not approve;
- exactly one journal per succeeded payment and per succeeded refund, none
  for anything else, every journal balanced;
- the merchant's /v1/balances equals succeeded minus refunded;
- refunds never exceed their payment.

It prints one row per fault: `make up`'s exit code and time, the requests
that failed transiently (retried) and for good, the seconds until the API
answered 2xx again, and until a payment created after `make up` succeeded
(with its status when it ended otherwise, e.g. blocked).
Exit 0 when every `make up` succeeded, every such payment succeeded, no
request failed for good, no payment of the load was blocked by fraud and every
invariant holds.

Run it with the stack up: `make chaos` (full profile) or
`.venv/bin/python -m stack.chaos --profile short`. The stack's worker is
restarted at the start with FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD raised:
every payment uses the test card pm_card_visa, which the default velocity
rule would block after five a minute. The stack's watchdog is restarted with
it: it starts a killed worker again, often before `make up` does, with its own
environment.
"""
