-- The double-entry ledger (chart of accounts in paystream/domain/ledger.py).
-- Append-only, enforced here: no UPDATE, DELETE or TRUNCATE, whoever asks.
-- A journal's id derives from its source (jrn_payment_<id>, jrn_refund_<id>),
-- so a redelivered CDC event posts nothing twice: ON CONFLICT DO NOTHING.

CREATE TABLE ledger_journals (
    id           text PRIMARY KEY,
    source_type  text NOT NULL CHECK (source_type IN ('payment', 'refund')),
    source_id    text NOT NULL,
    payment_id   text NOT NULL,
    merchant_id  text NOT NULL REFERENCES merchants (id),
    currency     text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_journals_source UNIQUE (source_type, source_id)
);

CREATE TABLE ledger_entries (
    id           bigserial PRIMARY KEY,
    journal_id   text NOT NULL REFERENCES ledger_journals (id),
    merchant_id  text NOT NULL REFERENCES merchants (id),
    account      text NOT NULL,
    direction    text NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount       bigint NOT NULL CHECK (amount > 0),
    currency     text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_journal ON ledger_entries (journal_id);
CREATE INDEX ledger_entries_merchant ON ledger_entries (merchant_id, currency, account);

CREATE FUNCTION ledger_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER ledger_journals_append_only BEFORE UPDATE OR DELETE ON ledger_journals
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER ledger_journals_no_truncate BEFORE TRUNCATE ON ledger_journals
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- Every journal balances: checked at commit, after all its entries are in.
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    net bigint;
BEGIN
    SELECT coalesce(sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END), 0)
      INTO net FROM ledger_entries WHERE journal_id = NEW.journal_id;
    IF net <> 0 THEN
        RAISE EXCEPTION 'journal % does not balance (net %)', NEW.journal_id, net
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();
