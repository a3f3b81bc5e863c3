-- Keyed hash chains: the id of the HMAC key that signed an `hmac-sha256` row.
ALTER TABLE audit_events ADD COLUMN hash_key_id TEXT;
