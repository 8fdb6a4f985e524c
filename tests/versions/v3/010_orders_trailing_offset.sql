-- description: Add orders.trailing_offset with the index the trailing-stop scan uses (test version, never shipped)

ALTER TABLE orders ADD COLUMN trailing_offset REAL;

-- used-by: SELECT trailing_offset FROM orders WHERE trailing_offset IS NOT NULL ORDER BY trailing_offset
CREATE INDEX idx_orders_trailing ON orders(trailing_offset);
