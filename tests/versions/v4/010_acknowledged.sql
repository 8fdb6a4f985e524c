-- description: Add risk_alerts.acknowledged_at and an index on v2's enforcement_log.execution_time_ms (test version)

ALTER TABLE risk_alerts ADD COLUMN acknowledged_at TEXT;

-- used-by: SELECT execution_time_ms FROM enforcement_log WHERE execution_time_ms > 100
CREATE INDEX idx_enforcement_log_execution_time ON enforcement_log(execution_time_ms);

CREATE VIEW open_risk_alerts AS SELECT alert_id, account_id, rule_id, raised_at FROM risk_alerts
    WHERE acknowledged_at IS NULL;
