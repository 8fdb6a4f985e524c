-- description: Add the optional alert_notes table (test version, never shipped)
-- riskmgr: option=track_alert_notes

CREATE TABLE alert_notes (
    alert_id INTEGER NOT NULL,
    note TEXT NOT NULL,
    written_at TEXT DEFAULT CURRENT_TIMESTAMP
);
