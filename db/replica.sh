#!/usr/bin/env bash
# Entrypoint of a streaming replica in docker-compose.yml (make up does the same
# in stack/postgres.py): clone the primary once with pg_basebackup -R, then run.
# Needs: PRIMARY_HOST, REPLICA_NAME, REPLICATION_PASSWORD, PGDATA.
set -euo pipefail
conninfo="host=$PRIMARY_HOST port=5432 user=replicator password=$REPLICATION_PASSWORD application_name=$REPLICA_NAME"
# A replica more than max_slot_wal_keep_size behind had its slot invalidated ("lost")
# and the WAL it needs removed: only a new clone streams again (make up does the same).
slot_status=$(PGPASSWORD=$REPLICATION_PASSWORD psql -h "$PRIMARY_HOST" -U replicator -d postgres -Atc \
  "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '$REPLICA_NAME'" 2>/dev/null || true)
if [ -s "$PGDATA/PG_VERSION" ] && [ "$slot_status" = lost ]; then
  echo "slot $REPLICA_NAME lost the WAL this replica needs: cloning it again" >&2
  find "$PGDATA" -mindepth 1 -delete
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # A slot left by an earlier clone would make -C fail.
  PGPASSWORD=$REPLICATION_PASSWORD psql -h "$PRIMARY_HOST" -U replicator -d postgres -Atc \
    "SELECT pg_drop_replication_slot('$REPLICA_NAME') FROM pg_replication_slots WHERE slot_name = '$REPLICA_NAME'" \
    >/dev/null 2>&1 || true
  pg_basebackup -d "$conninfo" -D "$PGDATA" -X stream -c fast -C -S "$REPLICA_NAME" -R
  printf "primary_conninfo = '%s'\nprimary_slot_name = '%s'\n" "$conninfo" "$REPLICA_NAME" \
    >> "$PGDATA/postgresql.auto.conf"
  chmod 700 "$PGDATA"
fi
exec postgres -c config_file=/etc/postgresql/paystream.conf -c hba_file=/etc/postgresql/pg_hba.conf
