-- Audit log partitioned by day (UTC) of logged_at, the time the writer appended the
-- row; the writer keeps logged_at non-decreasing in id, so dropping the oldest
-- partitions removes a prefix of the chain, never a row in the middle.
-- Rows of 0002 (if any) are copied into one partition ending at today 00:00 UTC.

-- Create parent's partition for [day, day + 1) UTC, named parent_pYYYYMMDD, unless it
-- exists. Serialised per partition name, so servers racing at midnight create it once.
CREATE OR REPLACE FUNCTION flk_ensure_day_partition(parent text, day date)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('flk_partition:' || current_schema() || '.' || part));
    IF to_regclass(format('%I.%I', current_schema(), part)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            part, parent,
            day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END IF;
    RETURN part;
END
$$;

CREATE TEMP TABLE flk_audit_0002 ON COMMIT DROP AS SELECT * FROM flk_audit;
DROP TABLE flk_audit;

-- Unique constraints of a partitioned table must contain the partition key, so
-- entry_id is unique per logged_at only; the writer's check under the chain lock is
-- what keeps re-shipping idempotent (audit_postgres._insert_batch).
CREATE TABLE flk_audit (
    id                bigint           NOT NULL,
    entry_id          text             NOT NULL,
    pcs_id            text             NOT NULL,
    tenant            text             NOT NULL,
    accepted          boolean          NOT NULL,
    escalated         boolean          NOT NULL,
    reason            text             NOT NULL,
    recomputed_d_hat  double precision,
    recomputed_budget double precision,
    received_at       timestamptz      NOT NULL,
    request_digest    text             NOT NULL,
    prev_hash         bytea            NOT NULL,
    row_hash          bytea            NOT NULL,
    logged_at         timestamptz      NOT NULL,
    PRIMARY KEY (id, logged_at),
    UNIQUE (entry_id, logged_at)
) PARTITION BY RANGE (logged_at);
CREATE INDEX flk_audit_pcs_id ON flk_audit (pcs_id);

-- The partition of the rows from before this migration: named after yesterday so
-- that retention ("partition pD ends at D + 1") treats it like the others.
DO $$
DECLARE
    today timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM flk_audit_0002) THEN
        RETURN;  -- a new database: the writer creates its first day's partition
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF flk_audit FOR VALUES FROM (MINVALUE) TO (%L)',
        'flk_audit_p' || to_char(today AT TIME ZONE 'UTC' - interval '1 day', 'YYYYMMDD'),
        today);
    INSERT INTO flk_audit
        SELECT *, today - interval '1 microsecond' FROM flk_audit_0002 ORDER BY id;
END
$$;

-- What retention dropped: the last row of each dropped partition. The first kept
-- row's prev_hash must be the newest last_row_hash here (flk audit verify checks it).
CREATE TABLE flk_audit_retention (
    partition     text        PRIMARY KEY,
    last_id       bigint      NOT NULL,
    last_row_hash bytea       NOT NULL,
    dropped_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER flk_audit_no_change BEFORE UPDATE OR DELETE ON flk_audit
    FOR EACH ROW EXECUTE FUNCTION flk_audit_append_only();
CREATE TRIGGER flk_audit_no_truncate BEFORE TRUNCATE ON flk_audit
    FOR EACH STATEMENT EXECUTE FUNCTION flk_audit_append_only();
