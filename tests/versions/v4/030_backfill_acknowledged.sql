-- description: Mark the alerts raised before v4 as acknowledged (test version; a data backfill)
-- riskmgr: option=backfill_acknowledged irreversible

UPDATE risk_alerts SET acknowledged_at = raised_at WHERE acknowledged_at IS NULL;
