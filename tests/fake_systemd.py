"""A fake systemd for the tests of service_manager=systemd: systemctl and journalctl on PATH.

    fake = FakeSystemd(tmp_path / "bin", "riskmgr.service", db, pidfile, log)
    monkeypatch.setenv("PATH", fake.path)      # SystemdControl("riskmgr.service") now drives it
    fake.settings["restart"] = "always"; fake.configure("--refuse-version", "2")
    ...
    fake.cleanup()

molecule/systemd runs the real systemd (in systemd-nspawn machines); this fake keeps the unit
tests fast and runnable anywhere.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tools" / "riskmgr_standin.py"

# The one fake is systemctl itself (and journalctl, the same script under that name): a real
# executable first on PATH, so the module's argv reach it exactly as they would reach systemd. It
# knows the units in units.json next to it; a unit is the stand-in daemonized with its pidfile, and
# MainPID is that pidfile's pid while it is alive. It models what systemd 252 was measured to do
# (molecule/systemd runs the real one):
# - a stop job (`stop --no-block`) is pending until the daemon exits, and forbids Restart= meanwhile;
# - Restart=always ("restart": "always" in units.json): a SIGKILL with no stop job pending is a crash
#   to systemd, which starts the daemon again RESTART_SEC later (auto-restart; "restart_sec" in
#   units.json) unless a stop comes first;
# - a daemon that died leaving its pidfile (SIGKILL, a refused version) leaves the unit failed;
# - "start_limit_hit": start fails as systemd's start limit does (the unit then failed, its Result
#   the earlier one), until reset-failed;
# - "stop_post_s": the unit stays deactivating that long after a stop request (an ExecStopPost=);
# - "kill_fails": `systemctl kill` fails and signals nothing (as EIO from a container's cgroup v1 made it).
# As journalctl it prints the unit's log file as journal entries (the cursor is the line number).
# Any argv it does not implement fails loudly (status 64), so the exact calls are tested.
FAKE_SYSTEMCTL = '''#!{python}
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATE = HERE / "state"
STANDIN = {standin!r}
RESTART_SEC = 0.2
PROPERTIES = ("MainPID", "LoadState", "ActiveState", "SubState", "UnitFileState", "Result", "NRestarts",
              "RefuseManualStart", "RefuseManualStop", "User")


def unit_config(unit):
    return json.loads((HERE / "units.json").read_text()).get(unit)


def marker(unit, kind):
    STATE.mkdir(exist_ok=True)
    return STATE / f"{{unit}}.{{kind}}"


def main_pid(config):
    """The pidfile's pid while it is a live (not zombie) process, else 0, as systemd reports it."""
    try:
        pid = int(Path(config["pidfile"]).read_text().split()[0])
        with open(f"/proc/{{pid}}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return 0
    return 0 if state == b"Z" else pid


def states(unit, config):
    if limit_hit(unit, config) and marker(unit, "limit_refused").exists():
        return "failed", "failed"
    if main_pid(config):
        return ("deactivating", "stop-sigterm") if marker(unit, "stop").exists() else ("active", "running")
    stop = marker(unit, "stop")
    if stop.exists() and time.time() < stop.stat().st_mtime + config.get("stop_post_s", 0):
        return "deactivating", "stop-post"  # ExecStopPost= still running after the daemon exited
    if marker(unit, "restart").exists():
        return "activating", "auto-restart"
    if Path(config["pidfile"]).exists():  # a clean stop removes it
        return "failed", "failed"
    return "inactive", "dead"


def limit_hit(unit, config):
    return config.get("start_limit_hit") and not marker(unit, "limit_reset").exists()


def show(unit, config, props, value_only):
    if config is None:
        values = dict.fromkeys(PROPERTIES, "")
        values.update(MainPID="0", LoadState="not-found", ActiveState="inactive", SubState="dead", Result="success")
    else:
        active, sub = states(unit, config)
        restarts = marker(unit, "restarts")
        values = {{"MainPID": str(main_pid(config)), "LoadState": config.get("load_state", "loaded"),
                  "ActiveState": active, "SubState": sub, "UnitFileState": "enabled",
                  "Result": "exit-code" if active == "failed" else "success",  # 252 keeps it after a start-limit hit
                  "NRestarts": restarts.read_text() if restarts.exists() else "0",
                  "RefuseManualStart": "no", "RefuseManualStop": "no", "User": config.get("user", "")}}
    for prop in props:
        print(values[prop] if value_only else f"{{prop}}={{values[prop]}}")
    return 0


def launch(config):
    argv = [sys.executable, STANDIN, "--db", config["db"], "--pidfile", config["pidfile"],
            "--log", config["log"], "--interval-ms", "20", *config["extra"]]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, check=False).returncode


def start(unit, config):
    if limit_hit(unit, config):
        marker(unit, "limit_refused").touch()
        sys.stderr.write(f"Job for {{unit}} failed because the control process exited with error code.\\n")
        return 1
    marker(unit, "stop").unlink(missing_ok=True)
    marker(unit, "restart").unlink(missing_ok=True)
    return 0 if main_pid(config) else launch(config)


def stop(unit, config):
    marker(unit, "stop").touch()
    marker(unit, "restart").unlink(missing_ok=True)  # a pending restart is cancelled
    pid = main_pid(config)
    if pid:
        os.kill(pid, signal.SIGTERM)
    return 0


def kill(unit, config):
    if config.get("kill_fails"):
        sys.stderr.write(f"Failed to kill unit {{unit}}: Failed to send signal SIGKILL to auxiliary processes: "
                         "Input/output error\\n")
        return 1
    pid = main_pid(config)
    if pid:
        os.kill(pid, signal.SIGKILL)
        if config.get("restart") == "always" and not marker(unit, "stop").exists():
            marker(unit, "restart").touch()
            subprocess.Popen([sys.executable, __file__, "_restart", unit], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


def auto_restart(unit, config):
    helper = marker(unit, f"helper.{{os.getpid()}}")
    helper.touch()  # FakeSystemd.cleanup() waits for it to go
    try:
        time.sleep(config.get("restart_sec", RESTART_SEC))
        pending = marker(unit, "restart")
        config = unit_config(unit)  # gone: the test is over
        if not pending.exists() or config is None:
            return 0  # a stop came first
        pending.unlink()
        restarts = marker(unit, "restarts")
        restarts.write_text(str(int(restarts.read_text()) + 1 if restarts.exists() else 1))
        return launch(config)
    finally:
        helper.unlink()


def reset_failed(unit, config):
    marker(unit, "limit_reset").touch()
    if not main_pid(config):
        Path(config["pidfile"]).unlink(missing_ok=True)
    return 0


def systemctl(args):
    unit = args[-1] if args else ""
    config = unit_config(unit)
    if args[:1] == ["show"] and all(arg.startswith("--property=") for arg in args[1:-1] if arg != "--value"):
        props = [arg.split("=", 1)[1] for arg in args[1:-1] if arg != "--value"]
        return show(unit, config, props, "--value" in args)
    actions = {{("start",): start, ("stop", "--no-block"): stop, ("kill", "--signal=SIGKILL"): kill,
               ("reset-failed",): reset_failed, ("_restart",): auto_restart}}
    action = actions.get(tuple(args[:-1]))
    if action is None:
        sys.stderr.write(f"fake systemctl: unsupported arguments {{args}}\\n")
        return 64
    if config is None:
        sys.stderr.write(f"Failed to {{args[0]}} {{unit}}: Unit {{unit}} not found.\\n")
        return 5
    return action(unit, config)


def journal_entries(config):
    """The unit's log lines as journal entries; the stand-in's own stamp is the entry's time."""
    try:
        lines = Path(config["log"]).read_text().splitlines()
    except FileNotFoundError:
        lines = []
    entries = []
    for number, line in enumerate(lines, 1):
        stamp = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
        micros = int(stamp.replace(tzinfo=datetime.timezone.utc).timestamp() * 1e6)
        entries.append({{"__CURSOR": str(number), "__REALTIME_TIMESTAMP": str(micros), "MESSAGE": line}})
    return entries


def journalctl(args):
    if args[:3] != ["--no-pager", "--quiet", "--output=json"]:
        sys.stderr.write(f"fake journalctl: unsupported arguments {{args}}\\n")
        return 64
    rest = args[3:]
    if rest == ["--lines=1"]:  # the newest entry of the whole journal: the one unit's newest line
        entries = [entry for config in json.loads((HERE / "units.json").read_text()).values()
                   for entry in journal_entries(config)][-1:]
    elif len(rest) == 2 and rest[0].startswith("--unit=") and rest[1].startswith("--after-cursor="):
        config = unit_config(rest[0].split("=", 1)[1])
        entries = journal_entries(config)[int(rest[1].split("=", 1)[1]):] if config else []
    elif len(rest) == 2 and rest[0].startswith("--unit=") and rest[1].startswith("--lines="):
        config = unit_config(rest[0].split("=", 1)[1])
        entries = journal_entries(config)[-int(rest[1].split("=", 1)[1]):] if config else []
    else:
        sys.stderr.write(f"fake journalctl: unsupported arguments {{args}}\\n")
        return 64
    for entry in entries:
        print(json.dumps(entry))
    return 0


if Path(sys.argv[0]).name == "journalctl":
    sys.exit(journalctl(sys.argv[1:]))
sys.exit(systemctl(sys.argv[1:]))
'''


class FakeSystemd:
    """The fake systemctl and journalctl in directory, managing one unit: the stand-in on db."""

    def __init__(self, directory: Path, unit: str, db: Path, pidfile: Path, log: Path) -> None:
        self.bin = directory
        self.bin.mkdir()
        self.unit, self.db, self.pidfile, self.log = unit, db, pidfile, log
        systemctl = self.bin / "systemctl"
        systemctl.write_text(FAKE_SYSTEMCTL.format(python=sys.executable, standin=str(STANDIN)))
        systemctl.chmod(0o755)
        (self.bin / "journalctl").symlink_to(systemctl)
        self.path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        self.settings: dict = {}  # the unit's own: restart="always", start_limit_hit=True, ...
        self.configure()

    def configure(self, *extra: str) -> None:
        """The unit's definition: the stand-in's files, its extra flags such as --ignore-sigterm,
        and the unit's settings."""
        config = {self.unit: {"db": str(self.db), "pidfile": str(self.pidfile), "log": str(self.log),
                              "extra": list(extra), **self.settings}}
        (self.bin / "units.json").write_text(json.dumps(config))

    def cleanup(self) -> None:
        """No unit any more, so a pending auto-restart starts nothing; and the wait for any restart
        under way, whose daemon the caller then finds in the pidfile and kills."""
        (self.bin / "units.json").write_text("{}")
        deadline = time.monotonic() + 10
        while list((self.bin / "state").glob("*.helper.*")) and time.monotonic() < deadline:
            time.sleep(0.05)
