-- Operators: who may open the operator console (/console/). Their keys are not
-- merchant keys: a merchant sees only its own payments, an operator sees the
-- whole pipeline. Neither table is in the CDC publication.

CREATE TABLE operators (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    -- sha256 of the operator key, as for merchants: the key is shown once, never stored.
    key_hash      text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Set by `paystream operator revoke`; the row stays so the audit trail does.
    revoked_at    timestamptz
);
-- A name says who someone is only while one active operator bears it.
CREATE UNIQUE INDEX operators_active_name ON operators (name) WHERE revoked_at IS NULL;

-- Console logins. The cookie holds a random id; only its sha256 is stored, so
-- reading this table (or a replica of it) gives no one a session.
CREATE TABLE operator_sessions (
    id_hash      text PRIMARY KEY,
    operator_id  text NOT NULL REFERENCES operators (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);
CREATE INDEX operator_sessions_expires ON operator_sessions (expires_at);
