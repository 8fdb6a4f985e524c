-- description: Add enforcement_log.execution_time_ms (DB-SCHEMA-003; announced by the seed, missing from its SQL)

ALTER TABLE enforcement_log ADD COLUMN execution_time_ms INTEGER;
