-- Dedup partitioned by day (UTC) of expires_at: once a day has passed, every entry of
-- its partition is dead and expiry is DROP TABLE (no scan, no dead tuples).
-- The primary key must contain the partition key, so a key can have one row per
-- expiry; first write wins because every put holds a per-key advisory lock while it
-- looks for a live row and inserts (storage/dedup_postgres.py).
-- Live rows of 0001 are copied; expired ones are left behind.
CREATE TEMP TABLE flk_dedup_0001 ON COMMIT DROP AS
    SELECT * FROM flk_dedup WHERE expires_at > now();
DROP TABLE flk_dedup;
CREATE TABLE flk_dedup (
    key        bytea       NOT NULL,
    value      bytea       NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key, expires_at)
) PARTITION BY RANGE (expires_at);
SELECT flk_ensure_day_partition('flk_dedup', d::date)
FROM generate_series(
    date_trunc('day', now() AT TIME ZONE 'UTC'),
    (SELECT coalesce(max(expires_at), now()) FROM flk_dedup_0001) AT TIME ZONE 'UTC',
    interval '1 day') AS d;
INSERT INTO flk_dedup SELECT * FROM flk_dedup_0001;
