-- audit_events becomes range-partitioned by event_timestamp (UTC days or months), so that
-- queries over a time range read only their partitions and retention drops whole partitions.
-- An existing table is converted in place: every row is copied with its chain columns
-- untouched, so every chain verifies as before.
--
-- Keys: a unique constraint of a partitioned table must hold the partition key, so the primary
-- key is (event_id, event_timestamp) and the chain position (correlation_id, chain_sequence,
-- event_timestamp). Chain sequences stay unique because every append holds its chain's head
-- row; a client replay carries the same timestamp, so it meets the same key. For a Citus-style
-- distribution by correlation_id, both would also need correlation_id (see docs/lifecycle.md).

-- The partitions that exist, with their bounds (read by the writer, the partition worker and
-- retention; kept with the DDL by audit_ensure_partition).
CREATE TABLE audit_partitions (
    partition_name  text        NOT NULL,
    range_start     timestamptz NOT NULL,
    range_end       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_partitions_pkey PRIMARY KEY (partition_name),
    CONSTRAINT audit_partitions_range CHECK (range_start < range_end)
);

-- Creates the partition of audit_events that holds `t`, spanning the UTC day or month of `t`
-- (`step`: daily or monthly), clipped so it never overlaps an existing partition; returns its
-- name (the existing one's, when one holds `t`). Concurrent callers take turns on a
-- transaction-level advisory lock.
CREATE FUNCTION audit_ensure_partition(t timestamptz, step text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    s timestamptz;
    e timestamptz;
    clip timestamptz;
    part text;
BEGIN
    SELECT partition_name INTO part FROM audit_partitions WHERE range_start <= t AND t < range_end;
    IF FOUND THEN
        RETURN part;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('audit_ensure_partition'));
    SELECT partition_name INTO part FROM audit_partitions WHERE range_start <= t AND t < range_end;
    IF FOUND THEN
        RETURN part;
    END IF;
    IF step = 'daily' THEN
        s := date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        e := s + interval '1 day';
    ELSIF step = 'monthly' THEN
        s := date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        e := s + interval '1 month';
    ELSE
        RAISE EXCEPTION 'partition interval must be daily or monthly, not %', step;
    END IF;
    SELECT max(range_end) INTO clip FROM audit_partitions WHERE range_end <= t AND range_end > s;
    IF clip IS NOT NULL THEN
        s := clip;
    END IF;
    SELECT min(range_start) INTO clip FROM audit_partitions WHERE range_start > t AND range_start < e;
    IF clip IS NOT NULL THEN
        e := clip;
    END IF;
    part := 'audit_events_p' || to_char(s AT TIME ZONE 'UTC', 'YYYYMMDD')
        || CASE WHEN s = date_trunc('day', s AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' THEN ''
                ELSE to_char(s AT TIME ZONE 'UTC', '"_"HH24MISS') END;
    EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)', part, s, e);
    -- Append-only: vacuum and analyze sooner than the defaults, freeze at once (see 000002).
    EXECUTE format('ALTER TABLE %I SET (autovacuum_vacuum_insert_scale_factor = 0.02, '
        'autovacuum_vacuum_insert_threshold = 10000, autovacuum_analyze_scale_factor = 0.02, '
        'autovacuum_freeze_min_age = 0)', part);
    INSERT INTO audit_partitions (partition_name, range_start, range_end) VALUES (part, s, e);
    RETURN part;
END;
$$;

ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;
ALTER TABLE audit_events_unpartitioned RENAME CONSTRAINT audit_events_pkey TO audit_events_unpartitioned_pkey;
ALTER TABLE audit_events_unpartitioned RENAME CONSTRAINT audit_events_chain_position TO audit_events_unpartitioned_chain_position;
DROP INDEX audit_events_timestamp_idx, audit_events_type_idx, audit_events_category_idx,
    audit_events_actor_idx, audit_events_resource_idx, audit_events_event_data_idx;

CREATE TABLE audit_events (LIKE audit_events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (event_timestamp);

-- A partition for every month that holds rows, and for the current one.
DO $$
DECLARE
    m timestamptz;
BEGIN
    FOR m IN SELECT DISTINCT date_trunc('month', event_timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
             FROM audit_events_unpartitioned LOOP
        PERFORM audit_ensure_partition(m, 'monthly');
    END LOOP;
    PERFORM audit_ensure_partition(now(), 'monthly');
END;
$$;

INSERT INTO audit_events SELECT * FROM audit_events_unpartitioned;
DROP TABLE audit_events_unpartitioned;

ALTER TABLE audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (event_id, event_timestamp);
ALTER TABLE audit_events ADD CONSTRAINT audit_events_chain_position
    UNIQUE (correlation_id, chain_sequence, event_timestamp);
CREATE INDEX audit_events_timestamp_idx ON audit_events (event_timestamp DESC, event_id DESC);
CREATE INDEX audit_events_type_idx ON audit_events (event_type, event_timestamp DESC);
CREATE INDEX audit_events_category_idx ON audit_events (event_category, event_timestamp DESC);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, event_timestamp DESC) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_events_resource_idx ON audit_events (resource_type, resource_id) WHERE resource_id IS NOT NULL;
CREATE INDEX audit_events_event_data_idx ON audit_events USING gin (event_data jsonb_path_ops);
-- Retention: the longest retention in a partition, read in O(log n) when deciding to drop it,
-- and the expired rows of each retention_days value, read as one index range.
CREATE INDEX audit_events_retention_idx ON audit_events (retention_days, event_timestamp);

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_update();
CREATE TRIGGER audit_events_legal_hold
    BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_held_delete();
-- A partition is dropped whole only by the purge, after its checks; TRUNCATE is refused.
CREATE FUNCTION audit_events_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is not truncated; retention removes expired events'
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_truncate();
