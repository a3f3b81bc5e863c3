-- Storage parameters for an append-heavy audit workload (see docs/tuning.md).
--
-- audit_events only grows: without deletes or updates, autovacuum would wait for the insert
-- threshold (20 % of the table by default) before setting visibility-map bits, which keeps
-- index-only scans and freezing behind on a large table. Vacuum and analyze it sooner.
-- Rows never change, so freezing them during those vacuums costs nothing later.
ALTER TABLE audit_events SET (
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_freeze_min_age = 0
);

-- Chain heads are updated in place on every write of their chain. Free space in each page lets
-- those updates stay HOT (no index update, no new index entries to vacuum).
ALTER TABLE audit_chain_heads SET (fillfactor = 70);
