-- The lifecycle after a write: legal holds, retention floors, what retention removed of each
-- chain, leases of background jobs, and forward-only chain heads.

-- One row per hold, kept after release (history). At most one active hold per correlation id.
-- A hold covers every event of its correlation id, present and future: `legal_hold` is computed
-- from this table at read time, never stored with the event.
CREATE TABLE audit_legal_holds (
    hold_id         uuid        NOT NULL,
    correlation_id  text        NOT NULL,
    reason          text        NOT NULL,
    placed_by       text        NOT NULL,
    placed_at       timestamptz NOT NULL,
    released_by     text,
    released_at     timestamptz,
    release_reason  text,
    CONSTRAINT audit_legal_holds_pkey PRIMARY KEY (hold_id),
    CONSTRAINT audit_legal_holds_correlation_id_length CHECK (char_length(correlation_id) BETWEEN 1 AND 255),
    CONSTRAINT audit_legal_holds_reason_length CHECK (char_length(reason) BETWEEN 1 AND 1000),
    CONSTRAINT audit_legal_holds_release_reason_length CHECK (char_length(release_reason) BETWEEN 1 AND 1000),
    CONSTRAINT audit_legal_holds_release_complete CHECK (
        (released_at IS NULL) = (released_by IS NULL) AND (released_at IS NULL) = (release_reason IS NULL))
);
CREATE UNIQUE INDEX audit_legal_holds_active ON audit_legal_holds (correlation_id) WHERE released_at IS NULL;
CREATE INDEX audit_legal_holds_history ON audit_legal_holds (correlation_id, placed_at);

-- A hold is released once, and nothing else about it changes; holds are never deleted.
CREATE FUNCTION audit_legal_holds_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'legal holds are kept after release; they are never deleted'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.released_at IS NOT NULL
       OR NEW.hold_id <> OLD.hold_id OR NEW.correlation_id <> OLD.correlation_id
       OR NEW.reason <> OLD.reason OR NEW.placed_by <> OLD.placed_by OR NEW.placed_at <> OLD.placed_at THEN
        RAISE EXCEPTION 'a legal hold can only be released, once'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_legal_holds_guard
    BEFORE UPDATE OR DELETE ON audit_legal_holds
    FOR EACH ROW EXECUTE FUNCTION audit_legal_holds_guard();

-- Second line of defence: a row under an active hold is never deleted, whoever asks.
CREATE FUNCTION audit_events_refuse_held_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_legal_holds
               WHERE correlation_id = OLD.correlation_id AND released_at IS NULL) THEN
        RAISE EXCEPTION 'audit event % is under legal hold (correlation_id %)', OLD.event_id, OLD.correlation_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER audit_events_legal_hold
    BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_held_delete();

-- Retention floors: an event of a listed category is kept at least this many days, whatever its
-- own retention_days says. The purge worker writes it from retention.categoryMinimumDays.
CREATE TABLE audit_retention_policies (
    event_category      text        NOT NULL,
    min_retention_days  integer     NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_retention_policies_pkey PRIMARY KEY (event_category),
    CONSTRAINT audit_retention_policies_days_range CHECK (min_retention_days BETWEEN 1 AND 36500)
);

-- What retention removed of each chain: runs of consecutive sequence numbers, each with the
-- hash of its last event, so a chain whose oldest events expired still verifies from there.
CREATE TABLE audit_chain_purges (
    correlation_id  text        NOT NULL,
    first_sequence  bigint      NOT NULL,
    last_sequence   bigint      NOT NULL,
    last_hash       text        NOT NULL,
    purged_at       timestamptz NOT NULL,
    CONSTRAINT audit_chain_purges_pkey PRIMARY KEY (correlation_id, first_sequence),
    CONSTRAINT audit_chain_purges_order CHECK (first_sequence BETWEEN 1 AND last_sequence)
);

-- Leases of background jobs that one replica at a time may run (retention, checkpoints): a row
-- per job, taken by an UPDATE when expired, renewed while the job runs. No session lock, so it
-- works through a transaction pooler.
CREATE TABLE datastorage_leases (
    name        text        NOT NULL,
    holder      text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    CONSTRAINT datastorage_leases_pkey PRIMARY KEY (name)
);

-- Every purge run, for the record.
CREATE TABLE audit_purge_runs (
    run_id              uuid        NOT NULL,
    holder              text        NOT NULL,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz,
    rows_purged         bigint      NOT NULL DEFAULT 0,
    partitions_dropped  integer     NOT NULL DEFAULT 0,
    CONSTRAINT audit_purge_runs_pkey PRIMARY KEY (run_id)
);

-- Chain heads only move forward and are never deleted: rewinding a head to hide removed events
-- needs this trigger disabled first (and the signed checkpoints still show it).
CREATE FUNCTION audit_chain_heads_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'chain heads are never deleted'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.correlation_id <> OLD.correlation_id
       OR NEW.last_sequence < OLD.last_sequence
       OR (NEW.last_sequence = OLD.last_sequence AND NEW.last_hash <> OLD.last_hash) THEN
        RAISE EXCEPTION 'chain head % only moves forward', OLD.correlation_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_chain_heads_forward_only
    BEFORE UPDATE OR DELETE ON audit_chain_heads
    FOR EACH ROW EXECUTE FUNCTION audit_chain_heads_forward_only();
