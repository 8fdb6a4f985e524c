-- description: Add the schema_version history table (DB-SCHEMA-001) and the file checksum ledger
-- The version rows themselves are written by the engine in the same transaction, with the
-- checksums of the files it applied: SQL here only creates objects, never data.

CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL,
    description TEXT NOT NULL,
    migration_script TEXT,
    rollback_script TEXT,
    execution_time_ms INTEGER,
    success BOOLEAN NOT NULL DEFAULT 1,
    error_message TEXT
);

-- used-by: SELECT version, applied_at FROM schema_version ORDER BY applied_at DESC LIMIT 1
CREATE INDEX idx_schema_version_applied ON schema_version(applied_at DESC);

-- One row per migration file applied, so that a later run can refuse a file edited since.
CREATE TABLE schema_migration_files (
    version INTEGER NOT NULL,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (version, filename)
);
