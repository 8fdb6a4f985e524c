-- description: Add the schema_migration_objects provenance table, so that a downgrade undoes only what the migration made
-- One row per object a migration brought: whether it created the object or adopted it from the
-- database as it found it, the sqlite_master text of each table whose definition it changed, and
-- the history rows it wrote into tables it did not create. The engine writes each row in the same
-- transaction as its object; this file comes first so that every later object can be recorded.

CREATE TABLE schema_migration_objects (
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    filename TEXT,
    original_sql TEXT,
    original_rows TEXT,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (version, kind, name)
);
