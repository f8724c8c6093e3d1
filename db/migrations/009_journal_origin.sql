-- Where each journal came from: the partition and offset of the change event whose
-- processing first posted it. The balances agent keeps, per source partition, the
-- highest offset it applied; a change that comes again, redelivered at its offset
-- or re-emitted by Debezium at a new one, posts nothing and is recognised by the
-- offset stored here, not by a marker per journal and account.
-- Journals posted before this migration have none (NULL) and are recognised by
-- those markers, as before.
ALTER TABLE ledger_journals
    ADD COLUMN origin_partition integer CHECK (origin_partition >= 0),
    ADD COLUMN origin_offset bigint CHECK (origin_offset >= 0);
