"""testinfra checks after migrate_v2.yml with riskmgr_track_unrealized_pnl: true (sqlite3 CLI)."""

NEW_INDEXES = {"idx_schema_version_applied", "idx_enforcement_log_success", "idx_positions_updated",
               "idx_orders_state_account"}
PNL_INDEXES = {"idx_daily_unrealized_pnl_date", "idx_daily_unrealized_pnl_account_date"}


def sql(host, query):
    return host.check_output("sqlite3 -bail %s %s", host.ansible.get_variables()["riskmgr_db_path"], query)


def test_schema_version_is_2(host):
    assert sql(host, "SELECT MAX(version) FROM schema_version WHERE success = 1") == "2"


def test_optional_table_and_both_its_indexes_exist(host):
    tables = set(sql(host, "SELECT name FROM sqlite_master WHERE type = 'table'").splitlines())
    indexes = set(sql(host, "SELECT name FROM sqlite_master WHERE type = 'index'").splitlines())
    assert "daily_unrealized_pnl" in tables
    assert PNL_INDEXES | NEW_INDEXES <= indexes, f"missing: {(PNL_INDEXES | NEW_INDEXES) - indexes}"
    columns = sql(host, "SELECT name FROM pragma_table_info('daily_unrealized_pnl')").splitlines()
    assert columns == ["account_id", "timestamp", "unrealized_pnl", "positions_count", "total_exposure",
                       "created_at"]


def test_daemon_runs_release_2_on_v2(host, releases):
    hostvars = host.ansible.get_variables()
    pid = int(host.file(hostvars["riskmgr_pidfile"]).content_string.strip())
    assert releases["daemon"] in host.process.get(pid=pid).args and releases["linked"] == "2"
    log = host.file(hostvars["riskmgr_log_path"]).content_string
    assert [line.rsplit(":", 1)[1].strip() for line in log.splitlines()
            if "Database schema version:" in line] == ["1", "2"]
