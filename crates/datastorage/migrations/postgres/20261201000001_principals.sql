-- Principals: who wrote each event (covered by the hash of `sha256-v2` / `hmac-sha256-v2`
-- rows), and who started each chain (for auth.chainAppend: starter). Both are NULL on rows and
-- chains from before principals existed.
ALTER TABLE audit_events ADD COLUMN ingested_by text;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_ingested_by_length
    CHECK (char_length(ingested_by) BETWEEN 1 AND 255) NOT VALID;
ALTER TABLE audit_chain_heads ADD COLUMN started_by text;
