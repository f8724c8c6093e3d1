-- Debezium's heartbeat: its heartbeat.action.query (connectors/payments.json)
-- inserts a row here every heartbeat interval, with the WAL position of the
-- moment. The table is in the publication, so each beat is a change that moves
-- the slot forward even when payments and refunds are idle (no WAL pinned), and
-- `make status` can tell a slot that streams from one that does not: a beat the
-- slot has not confirmed after ~30 s means changes do not reach Kafka
-- (stack/cdc.py). Debezium does not need the table in table.include.list: it
-- advances its position past filtered changes too, and no topic is made for it.
-- Safe to re-run.

CREATE TABLE IF NOT EXISTS cdc_heartbeat (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    beat_at timestamptz NOT NULL DEFAULT now(),
    lsn     pg_lsn NOT NULL DEFAULT pg_current_wal_lsn()
);
CREATE INDEX IF NOT EXISTS cdc_heartbeat_beat_at ON cdc_heartbeat (beat_at);

-- The query deletes beats older than ten minutes as it inserts a new one.
GRANT SELECT, INSERT, DELETE ON cdc_heartbeat TO debezium;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_publication_tables
                   WHERE pubname = 'paystream' AND schemaname = 'public'
                     AND tablename = 'cdc_heartbeat') THEN
        ALTER PUBLICATION paystream ADD TABLE cdc_heartbeat;
    END IF;
END
$$;
