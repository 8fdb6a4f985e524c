"""Loopback sshd instances, so that the bench reaches its fleet's hosts over real OpenSSH.

One sshd per host, each on its own loopback address from 127.0.0.40 up (all of 127.0.0.0/8 is on
lo; Molecule's ssh scenario uses .2-.4, the fault suite .12, the systemd scenario .31-.32), each
logging in root with one client key. Ansible then runs every module through ssh exactly as it
would on a fleet, and the two sides of the cost come apart: what runs on the hosts (the sshd
sessions and the modules) is not a descendant of ansible-playbook, so its rusage is the
controller's alone, plus the ControlPersist masters, which detach and are read here.

The sshd setup is the one molecule/ssh/create.yml and tests/faults/test_interrupts.py (#12) use
(absolute /usr/sbin/sshd, /run/sshd, internal-sftp, SetEnv SHLVL=1 so that root's .bashrc does
not run for each command). Python 3 standard library only.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")  # by absolute path: sshd refuses to re-exec otherwise
FIRST_ADDRESS, LAST_ADDRESS = 40, 59  # 127.0.0.40-59 are the bench's
LISTEN_TIMEOUT_S = 15.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class SshdError(Exception):
    """sshd cannot run here, or did not start: the message says which address and why."""


def process_stat(pid: int) -> list[bytes] | None:
    """/proc/PID/stat's fields after the command name (state first), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own user+sys, user+sys of the children it waited for) of a process, even a zombie."""
    fields = process_stat(pid)
    if fields is None:
        return 0.0, 0.0
    # man 5 proc: utime, stime, cutime, cstime are fields 14-17; `fields` starts at field 3.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains text (a run's ssh ControlPath directory)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = process_stat(int(entry.name))
        if needle in cmdline and fields and fields[0] not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


def stop_control_masters(control_dir: Path) -> tuple[float, int]:
    """End the ControlPersist masters of one run (`ssh: <control_dir>/... [mux]`): (their CPU seconds, count).

    A master forks away from the ssh client that started it, so no rusage of ansible-playbook
    holds its work (it carries every multiplexed session's encryption): it is read from /proc
    before it is told to exit. Left alone it would idle for ControlPersist's 60 s, and the next
    run would reuse its connection instead of paying for its own."""
    total = 0.0
    masters = processes_naming(str(control_dir))
    for pid in masters:
        own, children = cpu_seconds(pid)
        total += own + children
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return total, len(masters)


class SshdPool:
    """count sshd listeners on 127.0.0.40.., one client key; stop() ends them and their sessions."""

    def __init__(self, directory: Path, count: int) -> None:
        if count > LAST_ADDRESS - FIRST_ADDRESS + 1:
            raise SshdError(f"{count} ssh hosts asked for; the bench has 127.0.0.{FIRST_ADDRESS}-{LAST_ADDRESS}, "
                            f"{LAST_ADDRESS - FIRST_ADDRESS + 1} addresses")
        missing = [tool for tool in (str(SSHD), "/usr/bin/ssh", "/usr/bin/ssh-keygen") if not Path(tool).is_file()]
        if missing:
            raise SshdError(f"{', '.join(missing)} missing: apt-get install openssh-server openssh-client "
                            "(bench/run installs them through scripts/bootstrap.sh)")
        self.directory = directory
        self.listeners: list[subprocess.Popen] = []
        self.endpoints: list[tuple[str, int]] = []
        directory.mkdir(parents=True)
        self.key = directory / "client_key"
        self._keygen(self.key)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation; systemd would make it
        try:
            for index in range(count):
                self._start(index)
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _keygen(path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "riskmgr-bench", "-f", str(path)],
                       check=True, capture_output=True)

    def _start(self, index: int) -> None:
        address = f"127.0.0.{FIRST_ADDRESS + index}"
        with socket.socket() as probe:  # a free port on that address, whatever else runs here
            probe.bind((address, 0))
            port = probe.getsockname()[1]
        own = self.directory / f"sshd-{index + 1}"
        own.mkdir()
        self._keygen(own / "host_key")
        config = own / "sshd_config"
        # StrictModes no: the keys live under /tmp (mode 1777), which StrictModes refuses.
        config.write_text(f"""ListenAddress {address}:{port}
HostKey {own / 'host_key'}
PidFile none
AuthorizedKeysFile {self.key}.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 50
Subsystem sftp internal-sftp
SetEnv SHLVL=1
""", encoding="utf-8")
        self.listeners.append(subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(own / "sshd.log")],
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        self.endpoints.append((address, port))

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        for index, (address, port) in enumerate(self.endpoints):
            while not self._listening(address, port):
                listener = self.listeners[index]
                if listener.poll() is not None or time.monotonic() > deadline:
                    log = self.directory / f"sshd-{index + 1}" / "sshd.log"
                    text = log.read_text(errors="replace")[-400:] if log.exists() else "no log"
                    raise SshdError(f"sshd on {address}:{port} did not listen (exit {listener.poll()}): {text}")
                time.sleep(0.05)

    @staticmethod
    def _listening(address: str, port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((address, port)) == 0

    def host_vars(self, index: int) -> dict:
        """The inventory variables that make a host reached through sshd number index (from 0)."""
        address, port = self.endpoints[index]
        return {"ansible_connection": "ssh", "ansible_host": address, "ansible_port": port, "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                           "-o LogLevel=ERROR"}

    def sessions_cpu(self, timeout: float = 5.0) -> float:
        """User+sys of everything the hosts ran so far: every finished sshd session and what it ran.

        A session (and the shells and module processes under it) is reaped by its listener, which
        adds its times to the listener's children's times; a session still open or not yet
        reaped is waited for, up to timeout, after the run's masters were ended."""
        deadline = time.monotonic() + timeout
        while any(has_children(listener.pid) for listener in self.listeners) and time.monotonic() < deadline:
            time.sleep(0.02)
        return sum(cpu_seconds(listener.pid)[1] for listener in self.listeners)

    def stop(self) -> None:
        """End every listener and the sessions it forked (they would outlive it until their clients go)."""
        sessions = [pid for listener in self.listeners for pid in children_of(listener.pid)]
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for listener in self.listeners:
            if listener.poll() is None:
                listener.kill()
            listener.wait(timeout=10)
        self.listeners = []


def has_children(pid: int) -> bool:
    """Whether pid has a child, live or a zombie not yet reaped."""
    for entry in Path("/proc").iterdir():
        fields = process_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and int(fields[1]) == pid:
            return True
    return False


def children_of(pid: int) -> list[int]:
    """Every live process below pid (the sessions of an sshd listener and what they run)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        fields = process_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and fields[0] not in (b"Z", b"X"):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
