-- Audit log (storage/audit_postgres.py): append-only, hash-chained.
-- row_hash = sha256(prev_hash || canonical row); the first row's prev_hash is 32 zero
-- bytes. ids are dense and assigned by the writer that holds the chain lock.
CREATE TABLE IF NOT EXISTS flk_audit (
    id                bigint           PRIMARY KEY,
    entry_id          text             NOT NULL UNIQUE,  -- makes re-shipping idempotent
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
    row_hash          bytea            NOT NULL
);
CREATE INDEX IF NOT EXISTS flk_audit_pcs_id ON flk_audit (pcs_id);

-- Refuse UPDATE, DELETE and TRUNCATE. This stops mistakes, not a superuser (who can
-- disable triggers); the hash chain is what detects deliberate tampering.
CREATE OR REPLACE FUNCTION flk_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'flk_audit is append-only (% refused)', TG_OP;
END
$$;
DROP TRIGGER IF EXISTS flk_audit_no_change ON flk_audit;
CREATE TRIGGER flk_audit_no_change BEFORE UPDATE OR DELETE ON flk_audit
    FOR EACH ROW EXECUTE FUNCTION flk_audit_append_only();
DROP TRIGGER IF EXISTS flk_audit_no_truncate ON flk_audit;
CREATE TRIGGER flk_audit_no_truncate BEFORE TRUNCATE ON flk_audit
    FOR EACH STATEMENT EXECUTE FUNCTION flk_audit_append_only();
