-- The lifecycle after a write (SQLite): legal holds, retention floors, what retention removed of
-- each chain, leases, forward-only chain heads. Same tables and rules as PostgreSQL.

CREATE TABLE audit_legal_holds (
    hold_id         TEXT    NOT NULL PRIMARY KEY,
    correlation_id  TEXT    NOT NULL CHECK (length(correlation_id) BETWEEN 1 AND 255),
    reason          TEXT    NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    placed_by       TEXT    NOT NULL,
    placed_at       INTEGER NOT NULL,
    released_by     TEXT,
    released_at     INTEGER,
    release_reason  TEXT CHECK (length(release_reason) BETWEEN 1 AND 1000),
    CHECK ((released_at IS NULL) = (released_by IS NULL) AND (released_at IS NULL) = (release_reason IS NULL))
);
CREATE UNIQUE INDEX audit_legal_holds_active ON audit_legal_holds (correlation_id) WHERE released_at IS NULL;
CREATE INDEX audit_legal_holds_history ON audit_legal_holds (correlation_id, placed_at);

CREATE TRIGGER audit_legal_holds_no_delete BEFORE DELETE ON audit_legal_holds
BEGIN
    SELECT RAISE(ABORT, 'legal holds are kept after release; they are never deleted');
END;

CREATE TRIGGER audit_legal_holds_release_once BEFORE UPDATE ON audit_legal_holds
WHEN OLD.released_at IS NOT NULL OR NEW.hold_id <> OLD.hold_id
    OR NEW.correlation_id <> OLD.correlation_id OR NEW.reason <> OLD.reason
    OR NEW.placed_by <> OLD.placed_by OR NEW.placed_at <> OLD.placed_at
BEGIN
    SELECT RAISE(ABORT, 'a legal hold can only be released, once');
END;

CREATE TRIGGER audit_events_legal_hold BEFORE DELETE ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_legal_holds
             WHERE correlation_id = OLD.correlation_id AND released_at IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'audit event is under legal hold');
END;

CREATE TABLE audit_retention_policies (
    event_category      TEXT    NOT NULL PRIMARY KEY,
    min_retention_days  INTEGER NOT NULL CHECK (min_retention_days BETWEEN 1 AND 36500),
    updated_at          INTEGER NOT NULL
);

CREATE TABLE audit_chain_purges (
    correlation_id  TEXT    NOT NULL,
    first_sequence  INTEGER NOT NULL,
    last_sequence   INTEGER NOT NULL,
    last_hash       TEXT    NOT NULL,
    purged_at       INTEGER NOT NULL,
    PRIMARY KEY (correlation_id, first_sequence),
    CHECK (first_sequence BETWEEN 1 AND last_sequence)
);

CREATE TABLE datastorage_leases (
    name        TEXT    NOT NULL PRIMARY KEY,
    holder      TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE audit_purge_runs (
    run_id              TEXT    NOT NULL PRIMARY KEY,
    holder              TEXT    NOT NULL,
    started_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    rows_purged         INTEGER NOT NULL DEFAULT 0,
    partitions_dropped  INTEGER NOT NULL DEFAULT 0
);

-- Retention: the expired rows of each retention_days value, read as one index range.
CREATE INDEX audit_events_retention_idx ON audit_events (retention_days, event_timestamp);

CREATE TRIGGER audit_chain_heads_no_delete BEFORE DELETE ON audit_chain_heads
BEGIN
    SELECT RAISE(ABORT, 'chain heads are never deleted');
END;

CREATE TRIGGER audit_chain_heads_forward_only BEFORE UPDATE ON audit_chain_heads
WHEN NEW.correlation_id <> OLD.correlation_id OR NEW.last_sequence < OLD.last_sequence
    OR (NEW.last_sequence = OLD.last_sequence AND NEW.last_hash <> OLD.last_hash)
BEGIN
    SELECT RAISE(ABORT, 'chain heads only move forward');
END;
