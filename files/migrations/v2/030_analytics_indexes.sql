-- description: Add the analytics indexes (DB-SCHEMA-005)
-- Each "used-by" line is the query the index was made for; sqlite_verify checks with
-- EXPLAIN QUERY PLAN that SQLite really uses the index for it. The queries name only the columns
-- v2 depends on (the indexed ones): a field database's other columns may differ.

-- used-by: SELECT success, timestamp FROM enforcement_log WHERE success = 0 ORDER BY timestamp DESC LIMIT 100
CREATE INDEX idx_enforcement_log_success ON enforcement_log(success, timestamp DESC);

-- used-by: SELECT updated_at FROM positions ORDER BY updated_at DESC LIMIT 100
CREATE INDEX idx_positions_updated ON positions(updated_at DESC);

-- used-by: SELECT state, account_id FROM orders WHERE state = 'WORKING' AND account_id = 1
CREATE INDEX idx_orders_state_account ON orders(state, account_id);
