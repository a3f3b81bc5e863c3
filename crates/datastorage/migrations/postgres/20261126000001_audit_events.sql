-- Audit events and their hash-chain heads.
-- Column limits mirror the API's validation (datastorage-api/src/validate.rs); the named CHECK
-- constraints are a second line of defence, so a bypassed validation is a 4xx, never bad data.

CREATE TABLE audit_events (
    event_id             uuid        NOT NULL,
    event_timestamp      timestamptz NOT NULL,
    event_date           date        NOT NULL,
    version              text        NOT NULL,
    event_type           text        NOT NULL,
    event_category       text        NOT NULL,
    event_action         text        NOT NULL,
    event_outcome        text        NOT NULL,
    actor_type           text,
    actor_id             text,
    actor_ip             text,
    resource_type        text,
    resource_id          text,
    correlation_id       text        NOT NULL,
    parent_event_id      uuid,
    parent_event_date    timestamptz,
    namespace            text,
    cluster_id           text,
    severity             text,
    duration_ms          bigint,
    error_code           text,
    error_message        text,
    retention_days       integer     NOT NULL,
    is_sensitive         boolean     NOT NULL,
    event_data           jsonb       NOT NULL,
    chain_sequence       bigint      NOT NULL,
    previous_event_hash  text        NOT NULL,
    event_hash           text        NOT NULL,
    hash_algorithm       text        NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_events_pkey PRIMARY KEY (event_id),
    CONSTRAINT audit_events_chain_position UNIQUE (correlation_id, chain_sequence),
    CONSTRAINT audit_events_version_length CHECK (char_length(version) BETWEEN 1 AND 20),
    CONSTRAINT audit_events_event_type_length CHECK (char_length(event_type) BETWEEN 1 AND 100),
    CONSTRAINT audit_events_event_category_length CHECK (char_length(event_category) BETWEEN 1 AND 50),
    CONSTRAINT audit_events_event_action_length CHECK (char_length(event_action) BETWEEN 1 AND 50),
    CONSTRAINT audit_events_event_outcome_value CHECK (event_outcome IN ('success', 'failure', 'pending')),
    CONSTRAINT audit_events_correlation_id_length CHECK (char_length(correlation_id) BETWEEN 1 AND 255),
    CONSTRAINT audit_events_actor_ip_length CHECK (char_length(actor_ip) <= 45),
    CONSTRAINT audit_events_duration_ms_range CHECK (duration_ms >= 0),
    CONSTRAINT audit_events_retention_days_range CHECK (retention_days BETWEEN 1 AND 36500),
    CONSTRAINT audit_events_event_data_object CHECK (jsonb_typeof(event_data) = 'object')
);

-- Newest-first listing with the event_id tiebreak, and the filtered variants auditors use.
CREATE INDEX audit_events_timestamp_idx ON audit_events (event_timestamp DESC, event_id DESC);
CREATE INDEX audit_events_type_idx ON audit_events (event_type, event_timestamp DESC);
CREATE INDEX audit_events_category_idx ON audit_events (event_category, event_timestamp DESC);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, event_timestamp DESC) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_events_resource_idx ON audit_events (resource_type, resource_id) WHERE resource_id IS NOT NULL;
CREATE INDEX audit_events_event_data_idx ON audit_events USING gin (event_data jsonb_path_ops);

-- One row per chain: the last sequence number and hash. Writers lock it (SELECT ... FOR UPDATE)
-- to append, which serialises appends per correlation id and nothing else.
CREATE TABLE audit_chain_heads (
    correlation_id  text   NOT NULL,
    last_sequence   bigint NOT NULL,
    last_hash       text   NOT NULL,
    CONSTRAINT audit_chain_heads_pkey PRIMARY KEY (correlation_id)
);

-- Rows are append-only: an UPDATE is refused. (Someone with the rights to disable this trigger
-- can still edit rows; the hash chain is what makes such an edit visible.)
CREATE FUNCTION audit_events_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events rows are append-only'
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_update();
