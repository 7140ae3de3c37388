-- The queue tables churn: every message is inserted and, once acknowledged, deleted, so their
-- live rows stay few while dead ones pile up. Postgres's default (vacuum once 20% of a table
-- is dead) lets a small hot table bloat many times over between vacuums and lets its planner
-- statistics go stale; vacuum and analyze these after a fixed number of changes instead.
ALTER TABLE queue SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000
);
ALTER TABLE messages SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000
);
