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

-- One put (or batch) in one round trip: lock the keys (in lock-id order: overlapping
-- batches cannot deadlock), then - a statement of its own, so with a fresh snapshot
-- that sees a winner committed while we waited - read the live entries and insert
-- the keys that have none. Lock ids mix in the schema: other schemas never wait.
CREATE OR REPLACE FUNCTION flk_dedup_put(keys bytea[], vals bytea[], ttl_s float8)
RETURNS TABLE (key bytea, value bytea, inserted boolean)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(s.l) FROM (
        SELECT DISTINCT hashtextextended(current_schema() || encode(t.k, 'hex'), 0) AS l
        FROM unnest(keys) AS t(k) ORDER BY 1) AS s;
    RETURN QUERY
    WITH live AS (
        SELECT d.key AS k, d.value AS v FROM flk_dedup d
        WHERE d.key = ANY(keys) AND d.expires_at > now()
    ), ins AS (
        INSERT INTO flk_dedup AS d (key, value, expires_at)
        SELECT n.k, n.v, now() + make_interval(secs => ttl_s)
        FROM unnest(keys, vals) AS n(k, v)
        WHERE NOT EXISTS (SELECT 1 FROM live WHERE live.k = n.k)
        RETURNING d.key AS k, d.value AS v
    )
    SELECT live.k, live.v, false FROM live
    UNION ALL
    SELECT ins.k, ins.v, true FROM ins;
END
$$;
