-- description: Clear the negative trailing offsets of an account whose alert is acknowledged (test version)

CREATE TRIGGER trg_risk_alerts_acknowledged AFTER UPDATE OF acknowledged_at ON risk_alerts
WHEN NEW.acknowledged_at IS NOT NULL AND OLD.acknowledged_at IS NULL
BEGIN
    UPDATE orders SET trailing_offset = NULL WHERE account_id = NEW.account_id AND trailing_offset < 0;
END;
