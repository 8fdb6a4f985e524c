"""Faults #2 and #12: the run is interrupted; no row is lost and the daemon comes back up.

#2, ansible-playbook killed:
- at every task boundary of a real run (a test-only callback plugin, tests/faults/callback_plugins/
  riskmgr_interrupt.py, SIGKILLs ansible-playbook when the named task starts: between two tasks,
  no module running). TASKS is the list of those boundaries; a test records what a real run starts
  and fails when the list no longer matches it;
- in the middle of the downtime unit (riskmgr_migrate, with the daemon down): the controller
  SIGKILLed, a Ctrl-C on its terminal, a SIGTERM to it, and the
  controller with its workers and the unit itself SIGKILLed, right after the stop or right after
  the commit (a power cut of a machine that is both controller and host).
#12, the SSH connection to the host dropped right after its daemon was stopped: a real sshd on a
  loopback address, whose per-connection processes are killed.

After each fault: the database is exactly v1 or a verified v2 with every row, and a rerun of
`migrate_v2.yml -e riskmgr_confirm=true` converges: v2, the daemon up, every row, the lock
released (fault_fleet.assert_end_state).

The boundary tests run their fleets a few at a time in background threads (RISKMGR_INTERRUPT_JOBS,
default 3): each boundary costs two real runs, and on 2 cores the runs overlap their waits.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import local_fleet
import pytest
import yaml
from fault_fleet import (
    CONFIRM, HOST, RUN_END, Fleet, assert_end_state, assert_rows_kept, assert_v1_or_v2, capture, descendants, interrupt_env,
    freeze_and_kill, kill_tree, playbook_with_env, process_table, query, recorded_tasks, running, schema_state, start_playbook_with_env,
    wait_until)

pytestmark = pytest.mark.slow

JOBS = max(1, int(os.environ.get("RISKMGR_INTERRUPT_JOBS", "3")))
UNIT_FINISH_S = 60  # the unit finishing on its own after its controller is gone

# Every task a run of migrate_v2.yml starts on a v1 host that needs the upgrade, in order, as Ansible
# names them (skipped ones too: each is a boundary where the controller can die), generated from the
# playbooks: import_playbook, import_role, import_tasks and include_tasks followed statically, the
# plays the host enters (play 1, and the later plays of its group), the rescue sections left out (a
# run that goes well never starts them). A new task is a new boundary by itself;
# test_the_boundary_list_is_every_task_a_real_run_starts checks the walk against a recorded real run.
ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
# What the walk needs of the run: a v1 host to migrate offline, one batch.
SCENARIO = {"riskmgr_migration_mode": "offline", "riskmgr_action": "migrate", "riskmgr_rollback_method": "restore",
            "__riskmgr_plan": {"change": True}, "__riskmgr_summary": {"stops": False}, "group": "change"}
DYNAMIC = ("ansible.builtin.include_tasks", "include_tasks")
STATIC = ("ansible.builtin.import_tasks", "import_tasks")
ROLE_IMPORTS = ("ansible.builtin.import_role", "import_role", "ansible.builtin.include_role", "include_role")


def rendered(text: str, scenario: dict) -> str:
    """A task name or file name as Ansible templates it, with the scenario's values."""
    import jinja2
    env = jinja2.Environment()
    env.filters["bool"] = lambda value: value in (True, "true", "True", "yes", 1, "1")
    return env.from_string(str(text)).render(**scenario)


def holds(when, scenario: dict) -> bool:
    """Whether a task's when (a condition or a list of them) holds in the scenario."""
    conditions = when if isinstance(when, list) else [when]
    return all(rendered(f"{{{{ ({condition}) }}}}", scenario) == "True" for condition in conditions)


def task_file_tasks(path: Path, role: str | None, scenario: dict) -> list[str]:
    return walk_tasks(yaml.safe_load(path.read_text(encoding="utf-8")) or [], path.parent, role, scenario)


def role_entry(role: str, tasks_from: str, validate: bool, scenario: dict) -> list[str]:
    names = []
    specs = ROLES / role / "meta" / "argument_specs.yml"
    if validate and specs.exists():
        entry = (yaml.safe_load(specs.read_text(encoding="utf-8"))["argument_specs"]).get(tasks_from)
        if entry:
            names.append(f"{role} : Validating arguments against arg spec '{tasks_from}' - "
                         f"{entry.get('short_description', '')}".rstrip(" -"))
    return names + task_file_tasks(ROLES / role / "tasks" / f"{tasks_from}.yml", role, scenario)


def walk_tasks(tasks: list, here: Path, role: str | None, scenario: dict) -> list[str]:
    names: list[str] = []
    prefix = f"{role} : " if role else ""
    for task in tasks:
        if "block" in task:
            names += walk_tasks(task["block"], here, role, scenario) + walk_tasks(task.get("always", []), here, role,
                                                                                  scenario)
            continue
        action = next((key for key in task if key in DYNAMIC + STATIC + ROLE_IMPORTS), None)
        name = rendered(task.get("name", ""), scenario)
        if action in STATIC:
            names += task_file_tasks(here / rendered(task[action], scenario), role, scenario)
        elif action in DYNAMIC:
            spec = task[action]
            names.append(prefix + name)  # started, even when its condition skips it
            if not holds(task.get("when", []), scenario):
                continue
            names += task_file_tasks(here / rendered(spec["file"] if isinstance(spec, dict) else spec, scenario),
                                     role, scenario)
        elif action in ROLE_IMPORTS:
            spec = task[action]
            if "include_role" in action:
                names.append(prefix + name)
            names += role_entry(spec["name"], spec.get("tasks_from", "main"), spec.get("rolespec_validate", True),
                                scenario)
        else:
            names.append(prefix + name)
    return names


def playbook_tasks(path: Path, scenario: dict = SCENARIO) -> list[str]:
    """Every task a run of the playbook starts on the scenario's host, in order."""
    names: list[str] = []
    for entry in yaml.safe_load(path.read_text(encoding="utf-8")):
        imported = entry.get("ansible.builtin.import_playbook") or entry.get("import_playbook")
        if imported:
            names += playbook_tasks(path.parent / imported, scenario)
            continue
        hosts = str(entry.get("hosts", ""))
        if "riskmgr_to_" in hosts and f"riskmgr_to_{scenario['group']}'" not in hosts:
            continue  # a later play of another group: the host never enters it
        names += walk_tasks(entry.get("tasks", []), path.parent, None, scenario)
    return names


TASKS = playbook_tasks(ROOT / "migrate_v2.yml")
# The preflight takes the lock (a kill before it: none yet; after it: held until the watch accepts the upgrade).
LOCK_TASK = TASKS.index("riskmgr : Check the host while its daemon runs (settings, daemon, run lock, database, plan)")
UNIT_TASK = TASKS.index("riskmgr : Stop the daemon, back up, migrate, verify and start it, in one host-side process")
WATCH_TASK = TASKS.index("riskmgr : Watch the daemon on its new version, then accept the upgrade")


def boundaries() -> list[tuple[int, str, int]]:
    """(index, task, occurrence): the kill falls just before TASKS[index] starts (RUN_END: after the last)."""
    seen: dict[str, int] = {}
    found = []
    for index, name in enumerate([*TASKS, RUN_END]):
        seen[name] = seen.get(name, 0) + 1
        found.append((index, name, seen[name]))
    return found


BOUNDARIES = boundaries()


def boundary_id(boundary: tuple[int, str, int]) -> str:
    index, name, _ = boundary
    words = re.sub(r"[^A-Za-z0-9]+", "_", name.split(" : ", 1)[-1].split(" - ")[0]).strip("_")
    return f"{index:02d}_before_{words[:48]}"


# --- the boundary list cannot go stale -------------------------------------------------------

def test_the_boundary_list_is_every_task_a_real_run_starts(make_fleet, tmp_path):
    fleet = make_fleet()
    record = tmp_path / "started.txt"
    run = playbook_with_env(fleet, "migrate_v2.yml", *CONFIRM, env=interrupt_env(record=record), tag="record")
    assert run.returncode == 0, run.output[-4000:]
    assert run.recap[HOST]["changed"] == 2, run.recap  # the unit, then the watch that accepts the upgrade
    started = recorded_tasks(record)
    missing = [name for name in started if name not in TASKS]
    stale = [name for name in TASKS if name not in started]
    assert started == TASKS, (
        "TASKS in tests/faults/test_interrupts.py no longer matches the tasks a real run starts "
        f"(not in TASKS: {missing}; in TASKS but not started: {stale}). The new list:\n"
        + "\n".join(f'    "{name}",' for name in started))


# --- #2 at every task boundary ---------------------------------------------------------------

def kill_at_boundary_then_rerun(root: Path, boundary: tuple[int, str, int]) -> None:
    """One boundary, start to end: a fleet, a run SIGKILLed there, what it left, the rerun."""
    index, name, occurrence = boundary
    fleet = Fleet(root)  # its daemon runs from here: destroyed whatever happens
    try:
        before = capture(fleet, HOST)
        killed = playbook_with_env(fleet, "migrate_v2.yml", *CONFIRM, tag="killed",
                                   env=interrupt_env(kill_at=name, occurrence=occurrence))
        assert killed.returncode == -signal.SIGKILL, (
            f"the run was not killed before {name!r} (exit {killed.returncode}): that task never started; "
            f"see test_the_boundary_list_is_every_task_a_real_run_starts\n{killed.output[-3000:]}")
        # What the dead run left. Before the unit: v1 and the daemon untouched. After it: the unit
        # ran whole, so a verified v2 and the daemon running on it, and until its watch passed the
        # upgrade pending. The lock from its take to its release.
        db = fleet.db(HOST)
        upgraded, accepted = index > UNIT_TASK, index > WATCH_TASK
        assert Path(f"{db}.riskmgr-pending").exists() == (upgraded and not accepted), \
            f"the pending record after the kill before {name!r}"
        assert_v1_or_v2(db, "v2" if upgraded else "v1")
        assert_rows_kept(db, before)
        assert fleet.alive(HOST), f"{HOST}: the daemon is down after the kill before {name!r}"
        if upgraded:
            assert fleet.logged_versions(HOST) == [1, 2]
        else:
            assert fleet.pid(HOST) == before.pid, "the daemon was restarted before the unit ran"
        locked = LOCK_TASK < index <= WATCH_TASK  # the watch's accepting look releases it
        assert fleet.lock(HOST).exists() == locked, \
            f"{fleet.lock(HOST)}: {'missing' if locked else 'left behind'} after the kill before {name!r}"
        pid_after_kill = fleet.pid(HOST)

        # The rerun takes over the dead run's lock, finishes the job (or finds it done) and releases it.
        rerun = playbook_with_env(fleet, "migrate_v2.yml", *CONFIRM, tag="rerun", env={})
        assert_end_state(fleet, before, rerun, db="v2", daemon="running")
        # A v2 whose watch never passed is watched again (the watch accepts it: one change).
        assert rerun.recap[HOST]["changed"] == (0 if accepted else 1 if upgraded else 2), rerun.recap
        assert not Path(f"{db}.riskmgr-pending").exists()
        assert fleet.logged_versions(HOST) == [1, 2], "the daemon was stopped or started once too often"
        if upgraded:
            assert fleet.pid(HOST) == pid_after_kill, "the rerun restarted a daemon that was running on v2"
    finally:
        fleet.destroy()


@pytest.fixture(scope="module")
def boundary_runs(request, tmp_path_factory):
    """Every selected boundary's case, started in background threads, JOBS at a time; id -> Future.

    Each test waits for its own case: a failure is reported by that test, with its traceback."""
    selected = [item.callspec.params["boundary"] for item in request.session.items
                if item.module is request.module and getattr(item, "originalname", "") ==
                "test_run_killed_at_a_task_boundary_leaves_a_consistent_host_and_the_rerun_converges"]
    pool = ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="boundary")
    futures: dict[int, Future] = {
        boundary[0]: pool.submit(kill_at_boundary_then_rerun, tmp_path_factory.mktemp(f"b{boundary[0]:02d}") / "fleet",
                                 boundary)
        for boundary in selected}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("boundary", BOUNDARIES, ids=[boundary_id(b) for b in BOUNDARIES])
def test_run_killed_at_a_task_boundary_leaves_a_consistent_host_and_the_rerun_converges(boundary_runs, boundary):
    boundary_runs[boundary[0]].result(timeout=900)


# --- #2 in the middle of the downtime unit ---------------------------------------------------

def unit_processes(controller_pid: int) -> list[int]:
    """The Python running riskmgr_migrate under this controller (argv: python .../AnsiballZ_riskmgr_migrate.py;
    not the short shells that chmod or remove that file)."""
    table = process_table()
    found = []
    for pid in descendants(controller_pid):
        argv = table.get(pid, (0, "", b""))[2].split(b"\0")
        if len(argv) > 1 and argv[1].endswith(b"AnsiballZ_riskmgr_migrate.py"):
            found.append(pid)
    return found


def wait_for_the_daemon_to_stop(fleet: Fleet, run, poll: float = 0.005) -> int:
    """Poll until the unit has stopped the daemon; the daemon's pid."""
    pid = fleet.pid(HOST)
    deadline = time.monotonic() + 60
    while local_fleet.is_alive(pid):
        assert run.running() and time.monotonic() < deadline, \
            f"the run never stopped the daemon\n{run.out.read_text()[-3000:]}"
        time.sleep(poll)
    return pid


def committed_v2(db: Path) -> bool:
    """Whether the unit's migration has committed (read by a fresh connection; False while it cannot open)."""
    try:
        return bool(query(db, "SELECT 1 FROM sqlite_master WHERE name = 'schema_migration_files'"))
    except sqlite3.Error:
        return False


# A launcher that waits before it becomes the daemon's start command: the unit's start then
# leaves a window of that many seconds between its commit and a daemon that could escape a kill.
DELAYED_EXEC = "import os, sys, time; time.sleep(float(sys.argv[1])); os.execv(sys.argv[2], sys.argv[2:])"
START_DELAY_S = 3


def set_start_command(fleet: Fleet, command: str) -> str:
    """Give the host's daemon another start command in the inventory (the daemon keeps running); the old one."""
    variables = fleet.hosts[HOST]
    old, variables["riskmgr_start_command"] = variables["riskmgr_start_command"], command
    local_fleet.write_fleet(fleet.root, fleet.fleet)
    return old


# (how the run is interrupted, once the daemon is down: its database then)
MID_UNIT = {
    # SIGKILL to ansible-playbook's process group (fleet.start_playbook().kill()): the controller
    # dies; its workers left that group (setsid), and the unit runs on.
    "controller_sigkilled": "v2",
    # A terminal's Ctrl-C: SIGINT to the foreground group; ansible-playbook passes it on to each
    # worker's group, where the unit runs, then SIGTERM to each worker still alive (ansible-core's
    # worker_shutdown_poll_count is 0), which a busy worker passes on too: the unit ignores both.
    "ctrl_c_on_the_controller": "v2",
    # SIGTERM to ansible-playbook (a CI job's timeout or cancel, `timeout`, `kill PID`): it passes
    # SIGTERM on to each worker's group, where the unit runs: the unit ignores it.
    "controller_sigtermed": "v2",
    # The controller, its workers and the unit SIGKILLed (a power cut of a machine that is both
    # controller and host): nothing finishes the unit. Right after the stop (the unit notices
    # the daemon's exit every 10 ms, the test every 1 ms): v1 and no daemon...
    "unit_sigkilled_after_the_stop": "v1",
    # ...or after the migration committed, while the daemon's (slowed) start is under way: v2, no daemon.
    "unit_sigkilled_after_its_commit": "v2",
}


def ignored_signals(pid: int) -> set[signal.Signals]:
    """The signals a process ignores (SigIgn in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    return {signal.Signals(bit + 1) for bit in range(31) if mask >> bit & 1}


@pytest.mark.parametrize("how", list(MID_UNIT))
def test_run_killed_while_the_daemon_is_down_in_the_unit(make_fleet, how):
    fleet = make_fleet()
    db = fleet.db(HOST)
    start_command = fleet.hosts[HOST]["riskmgr_start_command"]
    if how == "unit_sigkilled_after_its_commit":
        set_start_command(fleet, shlex.join([sys.executable, "-c", DELAYED_EXEC, str(START_DELAY_S),
                                             *shlex.split(start_command)]))
    before = capture(fleet, HOST)
    run = fleet.start_playbook("migrate_v2.yml", *CONFIRM, tag="killed")
    unit: list[int] = []
    try:
        # The unit starts (and plans) while the daemon still runs: its process is known before the stop.
        unit = wait_until(lambda: unit_processes(run.pid), 60, "the unit to start", interval=0.01)
        wait_for_the_daemon_to_stop(fleet, run, poll=0.001)
        if how == "unit_sigkilled_after_its_commit":
            deadline = time.monotonic() + 60
            while not committed_v2(db):
                assert run.running() and time.monotonic() < deadline, "the unit never committed"
                time.sleep(0.005)
            assert not fleet.alive(HOST), "the daemon was started before the commit was seen"
        if how == "controller_sigkilled":
            run.kill()  # ansible-playbook's process group: its workers (own sessions) are not in it
        elif how == "ctrl_c_on_the_controller":
            os.killpg(run.pid, signal.SIGINT)
        elif how == "controller_sigtermed":
            os.kill(run.pid, signal.SIGTERM)
        else:  # the controller, its workers, the unit and whatever the unit was starting
            killed = freeze_and_kill(run.pid, first=unit)
        returncode = run.process.wait(timeout=30)
        if how.startswith("unit_sigkilled"):
            # Nothing finishes the unit: the database is as its last committed transaction left it.
            wait_until(lambda: not any(running(pid) for pid in killed), 10, "the killed processes to be gone")
        else:
            # The unit finishes on its own, with nobody waiting for it.
            wait_until(lambda: not any(running(pid) for pid in unit), UNIT_FINISH_S, "the unit to finish on its own")
    finally:
        run.kill()
        if unit and running(unit[0]):  # a failed test leaves no unit behind to start a daemon later
            freeze_and_kill(unit[0])
    assert returncode != 0
    if how.startswith("unit_sigkilled"):
        assert_v1_or_v2(db, MID_UNIT[how])
        assert_rows_kept(db, before)
        assert not fleet.alive(HOST), "the daemon runs, yet the unit was killed before it started it"
        set_start_command(fleet, start_command)
    else:
        assert fleet.alive(HOST), (f"{HOST}: the unit ended and left the daemon down\n"
                                   f"{fleet.log(HOST)[-2000:]}\n{run.err.read_text()[-2000:]}")
        assert_v1_or_v2(db, MID_UNIT[how])
        assert fleet.logged_versions(HOST) == [1, 2]
        assert_rows_kept(db, before)
        # The unit ignored these while the daemon was down; the daemon it started must not inherit that.
        inherited = ignored_signals(fleet.pid(HOST)) & {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}
        assert not inherited, f"the daemon started by the unit ignores {sorted(s.name for s in inherited)}"
    assert fleet.lock(HOST).exists(), "the killed run released its lock: no takeover tested"
    pid_before_rerun = fleet.pid(HOST)

    # The rerun takes over the lock and converges: the migration or only the daemon's start
    # when the unit died; when the unit finished on its own, only the watch its run never got to
    # (the upgrade was left pending), on the same daemon.
    rerun = fleet.playbook("migrate_v2.yml", *CONFIRM)
    assert_end_state(fleet, before, rerun, db="v2", daemon="running")
    assert fleet.logged_versions(HOST) == [1, 2]
    assert not Path(f"{db}.riskmgr-pending").exists()
    if how.startswith("unit_sigkilled"):
        again = fleet.playbook("migrate_v2.yml", *CONFIRM)
        assert_end_state(fleet, before, again, db="v2", daemon="running")
        assert again.recap[HOST]["changed"] == 0, again.recap
    else:
        assert rerun.recap[HOST]["changed"] == 1, rerun.recap  # the watch, accepting the upgrade
        assert fleet.pid(HOST) == pid_before_rerun, "the rerun restarted the daemon"


# --- #12 the SSH connection dropped right after the daemon was stopped -------------------------

SSHD = Path("/usr/sbin/sshd")  # by absolute path: sshd refuses to re-exec otherwise
SSH_ADDRESS = "127.0.0.12"  # all of 127.0.0.0/8 is on lo; Molecule's ssh scenario uses .2-.4


class Sshd:
    """One sshd (the listener, in the foreground) on a loopback address, logging in root by key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        self.key = directory / "client_key"
        for key in (self.key, directory / "host_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "faults", "-f", str(key)],
                           check=True, capture_output=True)
        with socket.socket() as probe:  # a free port on that address
            probe.bind((SSH_ADDRESS, 0))
            self.port = probe.getsockname()[1]
        self.log = directory / "sshd.log"
        config = directory / "sshd_config"
        # StrictModes no: the keys live under /tmp (1777). SetEnv SHLVL=1: see molecule/ssh/create.yml.
        config.write_text(f"""ListenAddress {SSH_ADDRESS}:{self.port}
HostKey {directory / 'host_key'}
PidFile none
AuthorizedKeysFile {self.key}.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
SetEnv SHLVL=1
""")
        # ssh's ControlPath is a unix socket (at most 107 bytes): a short directory, not tmp_path.
        self.control_dir = Path(tempfile.mkdtemp(prefix="rmcp", dir="/tmp"))
        self.listener = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(self.log)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((SSH_ADDRESS, self.port)) == 0

    def sessions(self) -> list[int]:
        """The per-connection sshd processes (the listener's children and theirs), not the listener."""
        table = process_table()
        return [pid for pid in descendants(self.listener.pid) if table.get(pid, (0, "", b""))[1].startswith("sshd")]

    def commands(self) -> list[int]:
        """What the sessions run: the modules' shells and Pythons."""
        table = process_table()
        return [pid for pid in descendants(self.listener.pid)
                if pid in table and not table[pid][1].startswith("sshd")]

    def host_vars(self) -> dict:
        return {"ansible_connection": "ssh", "ansible_host": SSH_ADDRESS, "ansible_port": self.port,
                "ansible_user": "root", "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                           "-o LogLevel=ERROR",
                "ansible_control_path_dir": str(self.control_dir)}

    def stop(self) -> None:
        kill_tree(self.sessions())
        if self.listener.poll() is None:
            self.listener.kill()
        self.listener.wait(timeout=10)
        # The client's ControlPersist masters (ssh ... [mux]) would otherwise idle for 60 s.
        masters = [pid for pid, (_, _, cmdline) in process_table().items()
                   if str(self.control_dir).encode() in cmdline]
        kill_tree(masters)
        shutil.rmtree(self.control_dir, ignore_errors=True)


@pytest.fixture
def sshd(tmp_path):
    missing = [tool for tool in (str(SSHD), shutil.which("ssh") or "ssh", shutil.which("ssh-keygen") or "ssh-keygen")
               if not Path(tool).is_file()]
    if missing:
        pytest.skip(f"sshd cannot run on this machine: {', '.join(missing)} missing "
                    "(apt-get install openssh-server openssh-client)")
    if not Path("/run/sshd").is_dir():  # sshd's privilege separation directory (systemd makes it)
        try:
            Path("/run/sshd").mkdir(mode=0o755)
        except OSError as err:
            pytest.skip(f"sshd cannot run on this machine: cannot create /run/sshd ({err.strerror})")
    server = Sshd(tmp_path / "sshd")
    try:
        deadline = time.monotonic() + 10
        while not server.listening():
            if server.listener.poll() is not None or time.monotonic() > deadline:
                log = server.log.read_text() if server.log.exists() else "no log"
                pytest.skip(f"sshd cannot run on this machine: it did not listen on {SSH_ADDRESS}:{server.port} "
                            f"(exit {server.listener.poll()}): {log[-500:]}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def over_ssh(fleet: Fleet, server: Sshd) -> None:
    """The fleet's host reached through the sshd instead of ansible_connection=local."""
    fleet.hosts[HOST].update(server.host_vars())
    local_fleet.write_fleet(fleet.root, fleet.fleet)


# pipelined: the project's ansible.cfg (pipelining over ssh): the module reads itself from stdin,
# no terminal, so a dropped connection only closes its pipes. tty: pipelining off (as with a sudo
# that requires a tty): ansible runs the module with `ssh -tt`, and the dropped connection hangs
# up its terminal, which sends it SIGHUP.
SSH_TRANSPORTS = {"pipelined": {}, "tty": {"ANSIBLE_PIPELINING": "False"}}


@pytest.mark.parametrize("transport", list(SSH_TRANSPORTS))
def test_ssh_connection_dropped_after_the_stop_the_unit_finishes_on_its_own_and_a_rerun_converges(
        make_fleet, sshd, transport):
    fleet = make_fleet()
    over_ssh(fleet, sshd)
    env = SSH_TRANSPORTS[transport]
    db = fleet.db(HOST)
    before = capture(fleet, HOST)
    run = start_playbook_with_env(fleet, "migrate_v2.yml", *CONFIRM, env=env, tag="dropped")
    try:
        wait_for_the_daemon_to_stop(fleet, run)
        unit = sshd.commands()
        sessions = sshd.sessions()
        assert unit and sessions, "no ssh session runs the unit"
        kill_tree(sessions)  # the connection is gone: no goodbye reaches the host's processes
        dropped = run.wait()
    finally:
        run.kill()
    assert dropped.recap.get(HOST, {}).get("unreachable") == 1, dropped.output[-3000:]
    assert sshd.listener.poll() is None, "the listener died with the sessions"

    # The unit finishes on its own on the host: v2 and the daemon on it (or, had it failed, v1
    # put back and the daemon on that); either way a consistent end with every row.
    wait_until(lambda: not any(running(pid) for pid in unit), UNIT_FINISH_S, "the unit to finish on its own")
    assert fleet.alive(HOST), f"{HOST}: the unit ended and left the daemon down\n{fleet.log(HOST)[-2000:]}"
    state = schema_state(db)
    print(f"{transport}: after the drop {db} is {state}, daemon versions {fleet.logged_versions(HOST)}, "
          f"the dropped run's recap {dropped.recap}")  # shown with -s, and when the test fails
    assert state in ("v1", "v2"), f"{db}: {state}"
    assert fleet.logged_versions(HOST)[-1] == int(state[1])
    assert_rows_kept(db, before)

    # A rerun over ssh converges; the run after it changes nothing and leaves the daemon alone.
    rerun = playbook_with_env(fleet, "migrate_v2.yml", *CONFIRM, env=env, tag="rerun")
    assert_end_state(fleet, before, rerun, db="v2", daemon="running")
    pid = fleet.pid(HOST)
    again = playbook_with_env(fleet, "migrate_v2.yml", *CONFIRM, env=env, tag="again")
    assert_end_state(fleet, before, again, db="v2", daemon="running")
    assert again.recap[HOST]["changed"] == 0, again.recap
    assert fleet.pid(HOST) == pid, "a run on a done host restarted its daemon"
