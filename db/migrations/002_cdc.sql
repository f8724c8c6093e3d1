-- What Debezium may read: an explicit publication (Debezium never creates one),
-- full before-images where consumers compare old and new rows, SELECT for its role.

-- Status transitions are judged on the before-image (e.g. "into succeeded").
ALTER TABLE payments REPLICA IDENTITY FULL;
ALTER TABLE refunds REPLICA IDENTITY FULL;

CREATE PUBLICATION paystream FOR TABLE payments, refunds;

GRANT USAGE ON SCHEMA public TO debezium;
GRANT SELECT ON payments, refunds TO debezium;
