#!/usr/bin/env bash
# Creates the roles and the database, then applies db/migrations/*.sql in order,
# each once, recording it in schema_migrations. Safe to re-run.
# Used by `make up` and by the db-setup service of docker-compose.yml.
# Needs: PGHOST, PGPORT, PGSUPERPASSWORD, PAYSTREAM_DB_PASSWORD,
# REPLICATION_PASSWORD, DEBEZIUM_DB_PASSWORD.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5432}"
export PGHOST PGPORT

PGPASSWORD=$PGSUPERPASSWORD psql -X -q -U postgres -d postgres \
  -v app_password="$PAYSTREAM_DB_PASSWORD" \
  -v replication_password="$REPLICATION_PASSWORD" \
  -v debezium_password="$DEBEZIUM_DB_PASSWORD" \
  -f "$here/roles.sql"

app() { PGPASSWORD=$PAYSTREAM_DB_PASSWORD psql -X -q -v ON_ERROR_STOP=1 -U paystream -d paystream "$@"; }
app -c 'CREATE TABLE IF NOT EXISTS schema_migrations (
          version text PRIMARY KEY,
          applied_at timestamptz NOT NULL DEFAULT now())'
applied=$(app -At -c 'SELECT version FROM schema_migrations')
for file in "$here"/migrations/[0-9]*.sql; do
  version=$(basename "$file" .sql)
  grep -qxF "$version" <<<"$applied" && continue
  echo "[db] applying $version"
  # -1: the migration and its record commit together or not at all.
  app -1 -f "$file" -c "INSERT INTO schema_migrations (version) VALUES ('$version')"
done
