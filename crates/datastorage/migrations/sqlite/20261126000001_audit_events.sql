-- Audit events and their hash-chain heads (SQLite). Same columns as PostgreSQL; timestamps are
-- integer microseconds since the Unix epoch (UTC), ids lower-case hyphenated UUID text (whose text
-- order equals UUID byte order), event_data JSON text.

CREATE TABLE audit_events (
    event_id             TEXT    NOT NULL,
    event_timestamp      INTEGER NOT NULL,
    event_date           TEXT    NOT NULL,
    version              TEXT    NOT NULL CHECK (length(version) BETWEEN 1 AND 20),
    event_type           TEXT    NOT NULL CHECK (length(event_type) BETWEEN 1 AND 100),
    event_category       TEXT    NOT NULL CHECK (length(event_category) BETWEEN 1 AND 50),
    event_action         TEXT    NOT NULL CHECK (length(event_action) BETWEEN 1 AND 50),
    event_outcome        TEXT    NOT NULL CHECK (event_outcome IN ('success', 'failure', 'pending')),
    actor_type           TEXT,
    actor_id             TEXT,
    actor_ip             TEXT CHECK (length(actor_ip) <= 45),
    resource_type        TEXT,
    resource_id          TEXT,
    correlation_id       TEXT    NOT NULL CHECK (length(correlation_id) BETWEEN 1 AND 255),
    parent_event_id      TEXT,
    parent_event_date    INTEGER,
    namespace            TEXT,
    cluster_id           TEXT,
    severity             TEXT,
    duration_ms          INTEGER CHECK (duration_ms >= 0),
    error_code           TEXT,
    error_message        TEXT,
    retention_days       INTEGER NOT NULL CHECK (retention_days BETWEEN 1 AND 36500),
    is_sensitive         INTEGER NOT NULL,
    event_data           TEXT    NOT NULL CHECK (json_type(event_data) = 'object'),
    chain_sequence       INTEGER NOT NULL,
    previous_event_hash  TEXT    NOT NULL,
    event_hash           TEXT    NOT NULL,
    hash_algorithm       TEXT    NOT NULL,
    created_at           INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    CONSTRAINT audit_events_pkey PRIMARY KEY (event_id),
    CONSTRAINT audit_events_chain_position UNIQUE (correlation_id, chain_sequence)
);

CREATE INDEX audit_events_timestamp_idx ON audit_events (event_timestamp DESC, event_id DESC);
CREATE INDEX audit_events_type_idx ON audit_events (event_type, event_timestamp DESC);
CREATE INDEX audit_events_category_idx ON audit_events (event_category, event_timestamp DESC);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, event_timestamp DESC);

CREATE TABLE audit_chain_heads (
    correlation_id  TEXT    NOT NULL PRIMARY KEY,
    last_sequence   INTEGER NOT NULL,
    last_hash       TEXT    NOT NULL
);

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events rows are append-only');
END;
