"""Run one module through real Ansible, ad hoc against the implicit localhost, and get its result.

    from ansible_run import run_module

    result = run_module("riskmgr_lock", {"path": str(lock), "run_id": "r1", "owner": "pytest"})
    assert result["changed"] and not result["failed"]
    result = run_module("riskmgr_lock", {"path": str(lock), "run_id": "r2", "owner": "x"}, check=True)
    assert result["failed"] and "locked by run r1" in result["msg"]  # a failed task is a result too
    # diff=True adds --diff; run_ansible() gives the raw CompletedProcess; load_library_module()
    # imports library/<name>.py for tests that fake the AnsibleModule boundary instead, and
    # module_arguments() gives what a module passes to AnsibleModule (its argument_spec, ...).
    run, results = run_playbook(PLAYBOOK, {"ansible_connection": "local", ...})  # {task name: result}

What runs: `ansible localhost -M library -m NAME -a '<args as JSON>'` from the repository
root, so ansible.cfg applies as it does for operators, with ANSIBLE_MODULE_UTILS pointing at
module_utils/. The module runs in a separate process on the controller's Python, exactly as
it would on a host: AnsiballZ packaging, argument_spec validation, check mode, fail_json.

How the result comes back: ansible-core 2.19 ships no `json` stdout callback, and `-o`
(oneline) and `--tree` are deprecated and drop `diff`, `warnings` and `exception`. So this
file is also a tiny stdout callback plugin (CallbackModule below). The helper links it into a
private temp directory (pointing ANSIBLE_CALLBACK_PLUGINS at tests/ would make ansible import
conftest.py as a plugin), runs ansible with ANSIBLE_STDOUT_CALLBACK=ansible_run, and the
callback prints one marked JSON line per host with the complete result dict.

The returned dict is the module's result as a playbook's `register:` would see it, including
`changed`, `failed` (always present), `msg`, `diff` (with diff=True), `warnings` and
`exception` when the module sent them. An unreachable host or a run that produced no result
raises AnsibleRunError carrying ansible's stdout and stderr.
"""
from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
MARKER = "ANSIBLE_RUN_RESULT "
DEFAULT_TIMEOUT_S = 120


def load_library_module(name: str) -> ModuleType:
    """Import library/<name>.py for tests that fake the AnsibleModule boundary.

    Needed when a module shares its name with its module_utils file (riskmgr_daemon): conftest
    maps the plain name to the module_utils one, so `import riskmgr_daemon` cannot reach it.
    """
    spec = importlib.util.spec_from_file_location(f"library_{name}", ROOT / "library" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ArgumentsSeen(Exception):
    """Raised by the stand-in for AnsibleModule once it has the module's arguments."""


def module_arguments(name: str) -> dict:
    """What library/<name>.py passes to AnsibleModule (argument_spec, required_if, ...), as it passes them.

    Only the Ansible boundary is replaced: main() runs up to the AnsibleModule it creates.
    """
    module = load_library_module(name)
    seen: dict = {}

    def record(**arguments) -> None:
        seen.update(arguments)
        raise ArgumentsSeen

    module.AnsibleModule = record
    try:
        module.main()
    except ArgumentsSeen:
        return seen
    raise AssertionError(f"library/{name}.py: main() returned without creating its AnsibleModule")


def module_defaults(name: str) -> dict:
    """{option: its default} of library/<name>.py's argument spec (None for an option without one)."""
    return {option: spec.get("default") for option, spec in module_arguments(name)["argument_spec"].items()}


class AnsibleRunError(AssertionError):
    """ansible did not produce a module result (bad arguments to ansible, unreachable, crash)."""


@functools.lru_cache(maxsize=None)
def callback_dir() -> str:
    """A directory holding only this file, as the callback plugin `ansible_run` (once per process)."""
    directory = tempfile.mkdtemp(prefix="ansible_run_callback_")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.symlink(Path(__file__).resolve(), Path(directory) / "ansible_run.py")
    return directory


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"),
        "ANSIBLE_LIBRARY": str(ROOT / "library"),
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",  # ad hoc runs ignore stdout_callback without it
        "ANSIBLE_CALLBACK_PLUGINS": callback_dir(),
        "ANSIBLE_STDOUT_CALLBACK": "ansible_run",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    })
    env.pop("ANSIBLE_CONFIG", None)  # the repository's ansible.cfg, found from cwd
    env.update(extra or {})
    return env


def run_ansible(name: str, args: dict, check: bool = False, diff: bool = False,
                timeout: float = DEFAULT_TIMEOUT_S, env: dict[str, str] | None = None,
                extra_args: list[str] | None = None) -> subprocess.CompletedProcess:
    """The raw ansible run; run_module() is what tests normally want."""
    command = [str(ANSIBLE), "localhost", "-M", str(ROOT / "library"), "-m", name, "-a", json.dumps(args)]
    command += ["--check"] if check else []
    command += ["--diff"] if diff else []
    command += extra_args or []
    return subprocess.run(command, cwd=ROOT, env=ansible_env(env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def parse_results(stdout: str) -> dict[str, dict]:
    """{host: result} from the marked lines the callback below prints."""
    results = {}
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            record = json.loads(line[len(MARKER):])
            results[record["host"]] = record["result"]
    return results


def run_module(name: str, args: dict, check: bool = False, diff: bool = False,
               timeout: float = DEFAULT_TIMEOUT_S, env: dict[str, str] | None = None) -> dict:
    """Run module `name` with `args` on localhost through ansible; return its result dict."""
    completed = run_ansible(name, args, check=check, diff=diff, timeout=timeout, env=env)
    result = parse_results(completed.stdout).get("localhost")
    if result is None or result.get("unreachable"):
        raise AnsibleRunError(f"ansible gave no module result for {name} (exit {completed.returncode})\n"
                              f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr}")
    result.setdefault("failed", False)
    result.setdefault("changed", False)
    return result


def parse_task_results(stdout: str) -> dict[str, dict]:
    """{task name: result} from the marked lines of a one-host playbook run (a name run twice: the last)."""
    results = {}
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            record = json.loads(line[len(MARKER):])
            results[record["task"]] = record["result"]
    return results


def run_playbook(playbook: str | os.PathLike, extra_vars: dict, inventory: str = "localhost,",
                 timeout: float = DEFAULT_TIMEOUT_S) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """ansible-playbook from the repository root with this file's callback: the run, {task name: result}.

    extra_vars go as one JSON -e (paths with spaces survive); a failed task is a result too, and the
    tasks after it have none.
    """
    command = [str(ANSIBLE_PLAYBOOK), "-i", inventory, str(playbook), "-e", json.dumps(extra_vars)]
    completed = subprocess.run(command, cwd=ROOT, env=ansible_env(), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout, check=False)
    return completed, parse_task_results(completed.stdout)


# --- the stdout callback: loaded by ansible from this file, never by pytest ------------------------

try:
    from ansible.plugins.callback import CallbackBase
except ImportError:  # pragma: no cover - the helper half works without the plugin half
    CallbackBase = object

if CallbackBase is not object:

    class CallbackModule(CallbackBase):
        """Prints MARKER + {"host", "task", "status", "result"} as one JSON line per task result."""

        CALLBACK_VERSION = 2.0
        CALLBACK_TYPE = "stdout"
        CALLBACK_NAME = "ansible_run"

        def _emit(self, status: str, task_result) -> None:
            result = {key: value for key, value in dict(task_result.result).items()
                      if not key.startswith("_ansible")}
            if status == "failed":
                result["failed"] = True
            record = {"host": task_result.host.get_name(), "task": task_result.task_name, "status": status,
                      "result": result}
            self._display.display(MARKER + json.dumps(record, default=repr))

        def v2_runner_on_ok(self, result) -> None:
            self._emit("ok", result)

        def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
            self._emit("failed", result)

        def v2_runner_on_unreachable(self, result) -> None:
            self._emit("unreachable", result)

        def v2_runner_on_skipped(self, result) -> None:
            self._emit("skipped", result)
