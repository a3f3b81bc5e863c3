-- Signed checkpoints: every interval, one replica records the head (sequence, hash) of every
-- chain changed since the previous checkpoint, links the record to the previous one by hash, and
-- signs it with the service's Ed25519 key. A chain checked against the latest checkpoint that
-- covers it shows a deletion of its newest events and a rewritten chain, which a hash chain alone
-- cannot. Both tables are append-only.

-- When each head last moved, so a checkpoint takes only the chains changed since the last one.
ALTER TABLE audit_chain_heads ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX audit_chain_heads_updated_idx ON audit_chain_heads (updated_at);

CREATE TABLE audit_checkpoints (
    checkpoint_id    bigint      NOT NULL,
    created_at       timestamptz NOT NULL,
    covers_from      timestamptz,
    previous_hash    text        NOT NULL,
    chains           bigint      NOT NULL,
    heads_sha256     text        NOT NULL,
    checkpoint_hash  text        NOT NULL,
    algorithm        text        NOT NULL,
    key_id           text        NOT NULL,
    signature        text        NOT NULL,
    CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (checkpoint_id),
    CONSTRAINT audit_checkpoints_id_positive CHECK (checkpoint_id >= 1)
);

CREATE TABLE audit_checkpoint_heads (
    checkpoint_id   bigint NOT NULL,
    correlation_id  text   NOT NULL,
    last_sequence   bigint NOT NULL,
    last_hash       text   NOT NULL,
    CONSTRAINT audit_checkpoint_heads_pkey PRIMARY KEY (checkpoint_id, correlation_id)
);
CREATE INDEX audit_checkpoint_heads_chain_idx ON audit_checkpoint_heads (correlation_id, checkpoint_id DESC);

CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only();
CREATE TRIGGER audit_checkpoint_heads_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoint_heads
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only();
