-- description: Add the risk_alerts table and its index (test version, never shipped)

CREATE TABLE risk_alerts (
    alert_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    rule_id TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    detail TEXT
);

-- used-by: SELECT raised_at, rule_id FROM risk_alerts WHERE account_id = 1 ORDER BY raised_at DESC
CREATE INDEX idx_risk_alerts_account ON risk_alerts(account_id, raised_at DESC);
