"""What every Molecule verifier shows when a check fails: what the daemon said.

pytest loads this file for each scenario's tests/ (the repository's pytest.ini makes the checkout
the rootdir, and conftest files are read from there down to the tests). A failed check, or a
failed fixture, gets in its report, for the host it ran on: the daemon's log file (the stand-in's
progress lines left out), the pid file and that process, and under systemd the unit's status and
its journal. Why a row count or a schema version is wrong is usually there: the daemon logs the
version it read, every start and stop, and the error it exited with. Then the failure is reported
as it was; nothing here changes a verdict.

Everything comes from the host's inventory variables, over the same connection as the checks
(local, ssh with sudo, or the nspawn machines), so a scenario needs nothing of its own for it.

The `releases` fixture reads the release link and the daemon's release lines of a local-fleet host,
for the scenarios that check which code runs.
"""
from __future__ import annotations

import posixpath
import re
import shlex

import pytest

# The stand-in logs one progress line every 5 s: they would fill the tail.
WITHOUT_PROGRESS = "grep -v ' INFO progress: '"
LAST_LINES = "tail --lines=60"


def evidence_commands(variables: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """(title, command, its arguments) of what shows the daemon's side on one host."""
    commands = []
    if variables.get("riskmgr_service_manager") == "systemd":
        unit = variables.get("riskmgr_service_name", "risk-manager")  # the role's default
        commands += [("unit status", "systemctl status --no-pager --full --lines=0 %s", (unit,)),
                     ("journal", f"journalctl --no-pager --unit=%s | {WITHOUT_PROGRESS} | {LAST_LINES}", (unit,))]
    elif variables.get("riskmgr_pidfile"):
        pidfile = variables["riskmgr_pidfile"]
        commands.append(("daemon process", 'cat %s && ps -ww -o pid,stat,lstart,args -p "$(cat %s)"', (pidfile, pidfile)))
    if variables.get("riskmgr_log_path"):
        commands.append(("daemon log", f"{WITHOUT_PROGRESS} %s | {LAST_LINES}", (variables["riskmgr_log_path"],)))
    return commands


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed check (or fixture) gets the daemon's log, and the unit's status and journal, in its report."""
    outcome = yield
    report = outcome.get_result()
    host = item.funcargs.get("host") if hasattr(item, "funcargs") else None
    if not report.failed or report.when == "teardown" or host is None:
        return
    name = host.backend.host
    for title, command, arguments in evidence_commands(host.ansible.get_variables()):
        result = host.run(command, *arguments)
        shown = (result.stdout + result.stderr).rstrip() or f"(nothing; exit status {result.rc})"
        as_typed = command % tuple(shlex.quote(argument) for argument in arguments)  # without sudo's wrapping
        report.sections.append((f"{title} of {name}: {as_typed}", shown))


RELEASE_LINE = re.compile(r"INFO riskmgr release (\d+) starting")


@pytest.fixture
def releases(host):
    """The release side of a local-fleet host (tools/local_fleet.py lays out <host>/releases/1, 2 and the
    link <host>/current): the release the link names, and the releases the daemon logged at each start."""
    variables = host.ansible.get_variables()
    host_dir = posixpath.dirname(posixpath.dirname(variables["riskmgr_db_path"]))
    link = host.file(posixpath.join(host_dir, "current"))
    log = host.file(variables["riskmgr_log_path"]).content_string
    return {"linked": posixpath.basename(link.linked_to) if link.is_symlink else None,
            "logged": RELEASE_LINE.findall(log),
            "daemon": posixpath.join(host_dir, "current", "bin", "riskmgr_daemon.py")}
