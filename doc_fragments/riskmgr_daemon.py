from __future__ import annotations


class ModuleDocFragment:
    # The options of every module that stops or starts the daemon (DAEMON_SPEC): one description for
    # all of them. Their defaults are those of the riskmgr_* variables (tests/static checks it).
    DOCUMENTATION = r"""
options:
  service_manager:
    description: How the daemon is run - C(systemd) (a unit) or C(command) (a pidfile and a start command).
    type: str
    choices: [command, systemd]
  service_name:
    description: The systemd unit, with I(service_manager=systemd).
    type: str
  pidfile:
    description: The daemon's pid file, with I(service_manager=command).
    type: path
  start_command:
    description: Command (list, or string split like a shell would, run without one) that launches the daemon and returns.
    type: raw
  process_match:
    description: Text the daemon's C(/proc/PID/cmdline) must contain for its pid to count.
    type: str
  stop_timeout:
    description: Seconds to wait for the daemon to exit after the stop.
    type: int
  stop_force:
    description: SIGKILL a daemon still running after I(stop_timeout) instead of failing.
    type: bool
  settle:
    description: Seconds the started daemon must stay alive (after it logged its schema version).
    type: float
  start_timeout:
    description: Seconds to wait for the started daemon to log its schema version.
    type: int
  log_path:
    description:
      - The daemon's log; without it, the unit's journal under systemd, or the process alone with C(command).
    type: path
  release_link:
    description:
      - The symlink the service's start command or C(ExecStart) goes through, naming the release of the
        daemon's code that runs (for example C(/opt/risk_manager/current)). Every start switches it first
        to the release of the schema version the daemon starts on (I(release_paths)), by a new symlink
        beside it renamed over it. Unset, the daemon's code is not switched (schema only).
    type: path
  release_paths:
    description:
      - The release directory of each schema version, keyed by version (C(1) and C(2)), with I(release_link).
    type: dict
  stop_command:
    description:
      - The daemon's own stop command (list, or string split like a shell would, run without one), with
        I(service_manager=command); unset, SIGTERM. The daemon's pid must still exit within I(stop_timeout) of
        the command's start (SIGKILL after it with I(stop_force)); a command that fails fails the task.
    type: raw
  daemon_chdir:
    description:
      - Absolute directory the start, stop and smoke commands run from; relative programs and paths in them
        resolve from it. Unset, they run from C(/) (the smoke test from I(release_link)), and a relative one is refused.
    type: path
  daemon_user:
    description:
      - User the start, stop and smoke commands run as (the module drops privileges itself when run as root).
        Under systemd the unit's C(User=) runs the daemon; a different one is a problem of I(state=checked).
    type: str
  daemon_group:
    description: Group the commands run with, with I(daemon_user); unset, the user's primary group.
    type: str
"""
