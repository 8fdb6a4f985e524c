-- description: Add the optional daily_unrealized_pnl table (DB-SCHEMA-002)
-- riskmgr: option=track_unrealized_pnl

CREATE TABLE daily_unrealized_pnl (
    account_id INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    unrealized_pnl REAL NOT NULL,
    positions_count INTEGER NOT NULL,
    total_exposure REAL,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (account_id, timestamp)
);

-- used-by: SELECT account_id, unrealized_pnl FROM daily_unrealized_pnl WHERE timestamp >= '2026-01-01' ORDER BY timestamp DESC
CREATE INDEX idx_daily_unrealized_pnl_date ON daily_unrealized_pnl(timestamp DESC);

-- used-by: SELECT timestamp, unrealized_pnl, total_exposure FROM daily_unrealized_pnl WHERE account_id = 1 ORDER BY timestamp DESC
CREATE INDEX idx_daily_unrealized_pnl_account_date ON daily_unrealized_pnl(account_id, timestamp DESC);
