"""After the start on the new version (module_utils/daemon_watch.py): the pending record, the smoke test,
and one look of the watch, on real files and real processes."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_watch import (SmokeTest, clear_pending, pending_path, read_pending, run_smoke, watch_poll,
                          write_pending)
from fixtures import wait_for
from host_processes import pid_is_running
from pidfile_control import PidfileControl
from sqlite_common import DaemonError


def test_the_pending_record_is_written_once_read_back_and_cleared(tmp_path):
    db = str(tmp_path / "state.db")
    assert read_pending(db) is None and not clear_pending(db)
    assert write_pending(db, 1, 2, "/opt/r/1", check_mode=True) and read_pending(db) is None
    assert write_pending(db, 1, 2, "/opt/r/1")
    record = read_pending(db)
    assert (record["from_version"], record["to_version"], record["release_before"]) == (1, 2, "/opt/r/1")
    assert oct(pending_path(db).stat().st_mode & 0o777) == "0o600"
    # The same upgrade again keeps the first record (and where it started from).
    assert not write_pending(db, 1, 2, "/opt/r/2") and read_pending(db)["release_before"] == "/opt/r/1"
    assert clear_pending(db, check_mode=True) and read_pending(db)
    assert clear_pending(db) and read_pending(db) is None
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left


@pytest.mark.parametrize("text", ["{not json", '{"to_version": 2}', "[1, 2]"])
def test_a_record_this_tool_did_not_write_is_an_error_that_says_what_to_do(tmp_path, text):
    db = str(tmp_path / "state.db")
    pending_path(db).write_text(text)
    with pytest.raises(DaemonError, match="remove the file, and rerun"):
        read_pending(db)


def test_a_smoke_test_that_exits_0_passes_from_the_given_directory(tmp_path):
    smoke = SmokeTest(argv=(sys.executable, "-c", "import os; print('ok from', os.getcwd())"), timeout=10)
    result = run_smoke(smoke, str(tmp_path))
    assert result["rc"] == 0 and f"ok from {tmp_path}" in result["output"]


def test_a_failing_smoke_test_names_its_command_status_and_output(tmp_path):
    smoke = SmokeTest(argv=(sys.executable, "-c", "import sys; sys.exit('no orders table')"), timeout=10)
    with pytest.raises(DaemonError, match=r"^the smoke test `.*` \(run from / as root\) exited with status 1 \(stderr: no orders table"):
        run_smoke(smoke, None)
    with pytest.raises(DaemonError, match="could not be run"):
        run_smoke(SmokeTest(argv=(str(tmp_path / "missing"),), timeout=5), None)


def test_a_smoke_test_past_its_timeout_is_killed_with_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
              f"'import time; time.sleep(60)']); open({str(marker)!r}, 'w').write(str(child.pid)); time.sleep(60)")
    began = time.monotonic()
    with pytest.raises(DaemonError, match="did not return within 1s and was killed"):
        run_smoke(SmokeTest(argv=(sys.executable, "-c", script), timeout=1), None)
    assert time.monotonic() - began < 10
    child = int(marker.read_text())
    wait_for(lambda: not pid_is_running(child), timeout=5)


def test_smoke_settings_come_from_the_module_params():
    assert SmokeTest.from_params({"smoke_command": [], "smoke_timeout": 5}) is None
    assert SmokeTest.from_params({"smoke_command": ["a", 1], "smoke_timeout": 5}) == SmokeTest(("a", "1"), 5.0)


@pytest.fixture
def sleeper(tmp_path):
    """A process named in a pidfile that logs to a file: what the watch looks at."""
    log, pidfile = tmp_path / "daemon.log", tmp_path / "daemon.pid"
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # watched-daemon"])
    pidfile.write_text(f"{process.pid}\n")
    log.write_text("INFO started\n")
    yield process, PidfileControl(str(pidfile), None), log
    process.kill()
    process.wait()


def test_a_look_counts_new_lines_and_names_those_that_match(sleeper):
    process, control, log = sleeper
    first = watch_poll(control, str(log), "watched-daemon", None, 0, "ERROR|CRITICAL")
    assert first["alive"] and first["pid"] == process.pid and first["lines"] == 1 and first["matched"] == []
    with open(log, "a") as handle:
        handle.write("INFO fine\nERROR lost the order feed\nINFO half a line")
    second = watch_poll(control, str(log), "watched-daemon", process.pid, first["mark"], "ERROR|CRITICAL")
    # Only complete lines count; the half line is read by the next look.
    assert second["lines"] == 2 and second["matched"] == ["ERROR lost the order feed"] and second["matched_count"] == 1
    with open(log, "a") as handle:
        handle.write(" done\n")
    third = watch_poll(control, str(log), "watched-daemon", process.pid, second["mark"], "ERROR|CRITICAL")
    assert third["lines"] == 1 and third["matched"] == []


def test_a_look_finds_the_daemon_gone_or_replaced(sleeper, tmp_path):
    process, control, log = sleeper
    process.kill()
    process.wait()
    look = watch_poll(control, str(log), "watched-daemon", process.pid, None, "ERROR")
    assert not look["alive"]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # watched-daemon"])
    try:
        Path(control.pidfile).write_text(f"{other.pid}\n")
        look = watch_poll(control, str(log), "watched-daemon", process.pid, None, "ERROR")
        assert not look["alive"] and look["current_pid"] == other.pid
    finally:
        other.kill()
        other.wait()
