-- description: Baseline schema v1 - 9 tables (lockouts, daily_pnl, contract_cache, trade_history, session_state, positions, orders, enforcement_log, reset_schedule)
-- riskmgr: baseline
-- This file is never applied to a live database. It is the reference the engine uses to
-- recognise a v1 database object by object, and the schema the demo and the tests build.

CREATE TABLE lockouts (
    account_id INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    locked_at TEXT NOT NULL,
    locked_until TEXT NOT NULL,
    rule_id TEXT
);

CREATE INDEX idx_lockouts_until ON lockouts(locked_until);

CREATE TABLE daily_pnl (
    account_id INTEGER NOT NULL,
    date TEXT NOT NULL,
    realized_pnl REAL NOT NULL DEFAULT 0,
    trade_count INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (account_id, date)
);

CREATE INDEX idx_daily_pnl_date ON daily_pnl(date);

CREATE TABLE contract_cache (
    contract_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    tick_size REAL NOT NULL,
    tick_value REAL NOT NULL,
    expires_at TEXT,
    cached_at TEXT NOT NULL
);

CREATE INDEX idx_contract_cache_symbol ON contract_cache(symbol);

CREATE TABLE trade_history (
    trade_id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    contract_id TEXT NOT NULL,
    side INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    price REAL NOT NULL,
    pnl REAL,
    timestamp TEXT NOT NULL
);

CREATE INDEX idx_trade_history_account_time ON trade_history(account_id, timestamp);

CREATE INDEX idx_trade_history_timestamp ON trade_history(timestamp);

CREATE TABLE session_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE positions (
    position_id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    contract_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    avg_price REAL NOT NULL,
    unrealized_pnl REAL,
    opened_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX idx_positions_account ON positions(account_id);

CREATE INDEX idx_positions_contract ON positions(contract_id);

CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    contract_id TEXT NOT NULL,
    order_type INTEGER NOT NULL,
    side INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    limit_price REAL,
    stop_price REAL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX idx_orders_account ON orders(account_id);

CREATE INDEX idx_orders_contract ON orders(contract_id);

CREATE INDEX idx_orders_state ON orders(state);

CREATE TABLE enforcement_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    rule_id TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT,
    success BOOLEAN NOT NULL,
    timestamp TEXT NOT NULL
);

CREATE INDEX idx_enforcement_account ON enforcement_log(account_id);

CREATE INDEX idx_enforcement_rule ON enforcement_log(rule_id);

CREATE INDEX idx_enforcement_timestamp ON enforcement_log(timestamp);

CREATE TABLE reset_schedule (
    account_id INTEGER PRIMARY KEY,
    reset_time TEXT NOT NULL,
    timezone TEXT NOT NULL DEFAULT 'America/Chicago',
    last_reset_at TEXT,
    next_reset_at TEXT
);
