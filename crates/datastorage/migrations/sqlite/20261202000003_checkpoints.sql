-- Signed checkpoints (SQLite): same tables and rules as PostgreSQL; times in microseconds.

ALTER TABLE audit_chain_heads ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX audit_chain_heads_updated_idx ON audit_chain_heads (updated_at);

CREATE TABLE audit_checkpoints (
    checkpoint_id    INTEGER NOT NULL PRIMARY KEY CHECK (checkpoint_id >= 1),
    created_at       INTEGER NOT NULL,
    covers_from      INTEGER,
    previous_hash    TEXT    NOT NULL,
    chains           INTEGER NOT NULL,
    heads_sha256     TEXT    NOT NULL,
    checkpoint_hash  TEXT    NOT NULL,
    algorithm        TEXT    NOT NULL,
    key_id           TEXT    NOT NULL,
    signature        TEXT    NOT NULL
);

CREATE TABLE audit_checkpoint_heads (
    checkpoint_id   INTEGER NOT NULL,
    correlation_id  TEXT    NOT NULL,
    last_sequence   INTEGER NOT NULL,
    last_hash       TEXT    NOT NULL,
    PRIMARY KEY (checkpoint_id, correlation_id)
);
CREATE INDEX audit_checkpoint_heads_chain_idx ON audit_checkpoint_heads (correlation_id, checkpoint_id DESC);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints rows are append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints rows are append-only');
END;
CREATE TRIGGER audit_checkpoint_heads_no_update BEFORE UPDATE ON audit_checkpoint_heads
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoint_heads rows are append-only');
END;
CREATE TRIGGER audit_checkpoint_heads_no_delete BEFORE DELETE ON audit_checkpoint_heads
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoint_heads rows are append-only');
END;
