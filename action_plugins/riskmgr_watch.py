# action_plugins/riskmgr_watch.py
"""The watch window on the controller: the riskmgr_watch module's poll, repeated for `seconds`.

The module looks once (is the daemon still the same process, which of its lines since the mark
match fail_regex); this action repeats that look until the window is over, shows the seconds left
and the lines seen after each look, and fails the host at the first look that finds the daemon gone
or a matching line. The last look, when it finds nothing wrong, accepts the upgrade (the module
removes its pending record). A window of 0 s is that one last look. In check mode nothing was
started, so nothing is watched: the window is only announced.

Its failure result carries served=true: the daemon ran on the new version, so the rescue that puts
the host back keeps every row it wrote there (riskmgr_recover downgrades in place).
"""
from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

MIN_POLL_S = 1.0
MAX_POLL_S = 15.0
POLLS_PER_WINDOW = 10


def poll_interval(seconds: float) -> float:
    """About ten looks per window, one a second at most and one every 15 s at least."""
    return min(MAX_POLL_S, max(MIN_POLL_S, seconds / POLLS_PER_WINDOW))


def on_versions(upgrade: dict | None) -> str:
    """" on v4 (the upgrade v3 -> v4)", from the pending record the module read; empty without one."""
    if not upgrade or upgrade.get("to_version") is None:
        return ""
    return f" on v{upgrade['to_version']} (the upgrade v{upgrade.get('from_version')} -> v{upgrade['to_version']})"


def progress_line(host: str, seconds: int, left: float, lines: int, pid, fail_regex: str,
                  upgrade: dict | None = None) -> str:
    return (f"{host}: watching the daemon (pid {pid}){on_versions(upgrade)} for {seconds} s: {max(0, round(left))} s "
            f"left, {lines} new log line{'s' if lines != 1 else ''} seen, none matching {fail_regex}")


def failure_text(host: str, label: str, look: dict, watched: float, fail_regex: str) -> str:
    when = f"{round(watched)} s into its {label}"
    if not look.get("alive"):
        current = look.get("current_pid")
        what = (f"the daemon (pid {look.get('pid')}) exited {when}" +
                (f"; pid {current} runs in its place (restarted by its service manager)" if current else ""))
    else:
        shown = " | ".join(look["matched"])
        what = (f"the daemon logged {look['matched_count']} line{'s' if look['matched_count'] != 1 else ''} "
                f"matching {fail_regex} {when}: {shown}")
    where = f" ({look['log']})" if look.get("log") else ""
    upgrade = look.get("upgrade") or {}
    versions = f" (the upgrade v{upgrade.get('from_version')} -> v{upgrade['to_version']})" \
        if upgrade.get("to_version") is not None else ""
    return f"{host}: {what}{where}{versions}"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = None  # the module's own options, passed through

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        # The offline unit's result (migrate.yml): a unit that failed has put the host back itself; the host
        # fails here with its message alone, not its whole result (every step of the plan with its SQL).
        unit = args.pop("unit", None) or {}
        if unit.get("msg"):
            result.update(failed=True, msg=unit["msg"], served=bool(unit.get("served")),
                          recovery=unit.get("recovery"), failed_phase=unit.get("failed_phase"))
            return result
        if args.get("state") == "pending":  # the earlier way to write the record (now riskmgr_pending): no window
            result.update(self._execute_module(module_name="riskmgr_watch", module_args=args, task_vars=task_vars))
            return result
        seconds = int(args.get("seconds") or 0)
        label = "canary watch" if args.pop("canary", False) else "watch"
        fail_regex = args.get("fail_regex")  # left out: the module's default, which each poll returns
        host = task_vars.get("inventory_hostname", "host")
        if self._play_context.check_mode:
            result.update(changed=False, watched_seconds=0,
                          msg=f"{host}: would watch the daemon for {seconds} s ({label}), then accept the upgrade")
            return result
        began = time.monotonic()
        deadline = began + seconds
        total_lines, looks = 0, 0
        while True:
            last = time.monotonic() >= deadline
            look = self._execute_module(module_name="riskmgr_watch",
                                        module_args=dict(args, state="polled", accept=last), task_vars=task_vars)
            looks += 1
            fail_regex = look.get("fail_regex") or fail_regex
            if look.get("failed"):
                result.update(look)
                result["served"] = True
                return result
            total_lines += look.get("lines", 0)
            args["mark"], args["pid"] = look.get("mark"), look.get("pid")
            watched = time.monotonic() - began
            if not look.get("alive") or look.get("matched_count"):
                result.update(failed=True, served=True, watched_seconds=round(watched, 1), lines_seen=total_lines,
                              pid=look.get("pid"), current_pid=look.get("current_pid"), matched=look.get("matched"),
                              msg=failure_text(host, label, look, watched, fail_regex))
                return result
            if last:
                break
            display.display(progress_line(host, seconds, deadline - time.monotonic(), total_lines, look.get("pid"),
                                          fail_regex, look.get("upgrade")))
            time.sleep(max(0.0, min(poll_interval(seconds), deadline - time.monotonic())))
        result.update(changed=look.get("accepted", False), accepted=look.get("accepted", False), pid=look.get("pid"),
                      released=look.get("released", False), warnings=look.get("warnings") or [],
                      watched_seconds=round(time.monotonic() - began, 1), lines_seen=total_lines, looks=looks,
                      upgrade=look.get("upgrade"),
                      msg=f"{host}: the daemon (pid {look.get('pid')}){on_versions(look.get('upgrade'))} ran {seconds} s "
                          f"({label}) with "
                          f"{total_lines} new log lines, none matching {fail_regex}")
        return result
