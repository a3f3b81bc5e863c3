-- Principals: who wrote each event (covered by the hash of `sha256-v2` / `hmac-sha256-v2`
-- rows), and who started each chain (for auth.chainAppend: starter). Both are NULL on rows and
-- chains from before principals existed.
ALTER TABLE audit_events ADD COLUMN ingested_by TEXT;
ALTER TABLE audit_chain_heads ADD COLUMN started_by TEXT;
