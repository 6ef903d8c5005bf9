-- Dedup store (storage/dedup_postgres.py): first write wins per key, with expiry.
CREATE TABLE IF NOT EXISTS flk_dedup (
    key        bytea       PRIMARY KEY,
    value      bytea       NOT NULL,
    expires_at timestamptz NOT NULL
);
-- The sweep deletes in expiry order; without this index it would scan the table.
CREATE INDEX IF NOT EXISTS flk_dedup_expires_at ON flk_dedup (expires_at);
