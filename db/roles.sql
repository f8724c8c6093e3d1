-- Roles and the database, run as the superuser; safe to re-run.
-- Passwords arrive as psql variables (:'app_password' ...), never in this file.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE paystream LOGIN PASSWORD %L', :'app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'paystream') \gexec
SELECT format('ALTER ROLE paystream PASSWORD %L', :'app_password') \gexec

-- Streaming replicas connect as this role (pg_basebackup and WAL streaming).
SELECT format('CREATE ROLE replicator LOGIN REPLICATION PASSWORD %L', :'replication_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') \gexec
SELECT format('ALTER ROLE replicator PASSWORD %L', :'replication_password') \gexec

-- Debezium gets replication and read access only: it never owns a table and
-- never creates the publication (publication.autocreate.mode=disabled).
SELECT format('CREATE ROLE debezium LOGIN REPLICATION PASSWORD %L', :'debezium_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'debezium') \gexec
SELECT format('ALTER ROLE debezium PASSWORD %L', :'debezium_password') \gexec

SELECT 'CREATE DATABASE paystream OWNER paystream'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'paystream') \gexec
GRANT CONNECT ON DATABASE paystream TO debezium;
