"""What the project never does, read from its source: no task runs a shell, no SQL is built from
variables, no module option takes SQL, no Python code of the project runs a shell. Each check
has a self-test that feeds it the forms it must catch. See docs/guarantees.md, "Security".

No host, no run: the YAML is parsed as Ansible parses it (ModuleArgsParser) and the Python by
its AST, in a few seconds. The end-to-end path checks (quotes and shell characters in a
database path, a `$` in it) run real playbooks: tests/faults/test_resources.py.
"""
from __future__ import annotations

import ast
import functools
import re
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

YAML_ROOTS = ("roles", "playbooks", "molecule")
PLAY_TASK_KEYS = ("pre_tasks", "tasks", "post_tasks", "handlers")
BLOCK_KEYS = ("block", "rescue", "always")
SHELL_MODULES = {"shell", "raw", "script", "win_shell", "expect"}  # short names, any collection
COMMAND_MODULES = {"command"}
# In a command line given as one string: what only a shell would give a meaning to, and Jinja
# (a templated string is split on whitespace after templating: a value with a space becomes two).
SHELL_METACHARACTERS = re.compile(r"[|&;<>()$`\\*?\[\]{}!~#\n]")
# Test scaffolding of the Molecule ssh and systemd scenarios (they provision sshd, users and
# systemd-nspawn machines on the machine that runs Molecule; none of it runs on a fleet host).
# Each entry: (file, task name) -> why it is accepted.
ALLOWED_SHELL_TASKS = {
    ("molecule/ssh/destroy.yml", "Stop each host's stand-in daemon, by its pid file"):
        "a pid-file loop in bash; every value comes in through `environment:`, none is templated into the script",
    ("molecule/ssh/destroy.yml", "Stop each sshd this scenario started, by its pid file"):
        "as above: values through `environment:` only",
    ("molecule/ssh/create.yml", "Build one v1 state.db per host, owned by riskmgr"):
        "as above: values through `environment:` only",
    ("molecule/ssh/create.yml", "Start each host's stand-in daemon as riskmgr"):
        "command (no shell) with a templated cmd: riskmgr_start_command is a shlex-quoted command line by "
        "contract (README), split again by the command module with shlex, as riskmgr_daemon splits it",
    ("molecule/systemd/create.yml", "Mount each machine's root, an overlay of this machine's root"):
        "mount of an overlay in bash; every value comes in through `environment:`, none is templated into the script",
    ("molecule/systemd/create.yml",
     "Prepare each machine's root (users, sshd, sudo, masked units, the daemon's releases and unit)"):
        "as above: values (and the sshd drop-in and unit file texts) through `environment:` only",
    ("molecule/systemd/create.yml", "Boot each machine"):
        "systemd-nspawn started in the background in bash; values through `environment:` only",
    ("molecule/systemd/create.yml", "Wait until each machine has booted and its daemon logged its schema version"):
        "an nsenter polling loop in bash; values through `environment:` only",
    ("molecule/systemd/destroy.yml", "Power off each machine and wait until it is gone"):
        "as above: values through `environment:` only",
    ("molecule/systemd/destroy.yml", "Unmount each machine's root"):
        "as above: values through `environment:` only",
}
MESSAGE_ARGS = {"msg", "fail_msg", "success_msg"}  # text for the operator, never SQL that runs
SQL_TEXT = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|REPLACE\s+INTO|"
                      r"(CREATE|DROP)\s+(UNIQUE\s+)?(TABLE|INDEX|VIEW|TRIGGER)|ALTER\s+TABLE|ATTACH\s|VACUUM|"
                      r"PRAGMA\s+\w+)", re.IGNORECASE | re.DOTALL)
MIGRATIONS_FACT = "__riskmgr_migrations"
MIGRATIONS_LOOKUP = re.compile(r"^\{\{\s*lookup\('riskmgr_migrations',\s*[\w.]+\)\s*\}\}$")
JINJA_NAME = re.compile(r"^\{\{\s*([A-Za-z_]\w*)\s*\}\}$")


def yaml_files() -> list[Path]:
    files = sorted(ROOT.glob("*.yml"))
    for top in YAML_ROOTS:
        files += sorted(p for p in (ROOT / top).rglob("*") if p.suffix in (".yml", ".yaml"))
    return files


def task_lists(path: Path, data) -> list[list]:
    """The task lists of one YAML file: a playbook's plays, or a tasks/handlers file; [] for the rest
    (variables, argument specs, Molecule's own config)."""
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        return []
    if any("hosts" in item or "import_playbook" in item or "ansible.builtin.import_playbook" in item for item in data):
        return [play[key] for play in data for key in PLAY_TASK_KEYS if isinstance(play.get(key), list)]
    if {"tasks", "handlers"} & set(path.relative_to(ROOT).parts):
        return [data]
    raise AssertionError(f"{path}: a list that is neither plays nor in a tasks/handlers directory; classify it")


def walk_tasks(tasks: list):
    """Every task of a task list, inside block/rescue/always too (the blocks themselves are not tasks)."""
    for task in tasks:
        if any(key in task for key in BLOCK_KEYS):
            for key in BLOCK_KEYS:
                yield from walk_tasks(task.get(key) or [])
        else:
            yield task


@functools.lru_cache(maxsize=1)
def project_tasks() -> list[tuple[str, dict, str, dict]]:
    """(file, task, module, args) of every task of every playbook and task file, parsed as Ansible does."""
    from ansible.parsing.mod_args import ModuleArgsParser
    from ansible.plugins.loader import action_loader, init_plugin_loader, module_loader
    init_plugin_loader()
    module_loader.add_directory(str(ROOT / "library"))
    action_loader.add_directory(str(ROOT / "action_plugins"))
    found = []
    for path in yaml_files():
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for tasks in task_lists(path, data):
            for task in walk_tasks(tasks):
                module, args, _delegate = ModuleArgsParser(task).parse()
                found.append((str(path.relative_to(ROOT)), task, module, args))
    return found


def shell_use(module: str, args: dict) -> str | None:
    """Why this task runs something through a shell (or a split command string), or None."""
    short = module.rsplit(".", 1)[-1]
    if short in SHELL_MODULES:
        return f"module {module}"
    if short in COMMAND_MODULES and "argv" not in args:
        line = args.get("cmd", args.get("_raw_params", ""))
        if SHELL_METACHARACTERS.search(str(line)):
            return f"{module} with a command string {line!r}: use argv"
    return None


def test_security_no_task_runs_a_shell_and_commands_take_argv_lists():
    tasks = project_tasks()
    modules = {module for _file, _task, module, _args in tasks}
    # The walk is not vacuous: it reaches tasks inside blocks and rescues of both playbooks.
    assert len(tasks) > 100 and {"riskmgr_migrate", "sqlite_restore", "ansible.builtin.command"} <= modules, modules
    used = {(file, task.get("name")): why for file, task, module, args in tasks if (why := shell_use(module, args))}
    unexplained = {key: why for key, why in used.items() if key not in ALLOWED_SHELL_TASKS}
    assert not unexplained, f"tasks that use a shell or a command string: {unexplained}"
    stale = set(ALLOWED_SHELL_TASKS) - set(used)
    assert not stale, f"allowed but no longer there (remove them from ALLOWED_SHELL_TASKS): {stale}"
    assert all(file.startswith("molecule/") for file, _name in used), "only Molecule scaffolding may use one"


def test_security_the_shell_check_catches_every_form():
    """shell_use() on tasks as an author could write them: the check above is not blind to any form."""
    from ansible.parsing.mod_args import ModuleArgsParser
    caught = [{"shell": "echo hi"}, {"ansible.builtin.shell": {"cmd": "echo hi"}}, {"raw": "id"},
              {"ansible.builtin.script": "x.sh"}, {"action": "ansible.builtin.shell echo"},
              {"local_action": "ansible.legacy.shell echo"}, {"command": "ls | wc -l"},
              {"ansible.builtin.command": {"cmd": "rm {{ path }}"}}, {"command": "echo $HOME"}]
    fine = [{"ansible.builtin.command": {"argv": ["ls", "-l", "{{ path }}"]}}, {"command": "ssh-keygen -q -t ed25519"},
            {"ansible.builtin.command": {"argv": "{{ ['install', '-d'] + dirs }}"}}]
    for task in caught:
        assert shell_use(*ModuleArgsParser(task).parse()[:2]), task
    for task in fine:
        assert shell_use(*ModuleArgsParser(task).parse()[:2]) is None, task


SHELL_CALLS = {"system", "popen", "getstatusoutput", "getoutput"}  # os.* and subprocess.* that take a command line


def python_shell_uses(path: Path) -> list[str]:
    """Calls in one Python file that would run a command line through a shell."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        shell = [k for k in node.keywords if k.arg == "shell" and not (isinstance(k.value, ast.Constant)
                                                                      and k.value.value is False)]
        if name in SHELL_CALLS or shell:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_security_no_python_code_of_the_project_runs_a_shell():
    sources = [p for top in ("library", "module_utils", "action_plugins", "lookup_plugins", "test_plugins", "tools")
               for p in sorted((ROOT / top).glob("*.py"))]
    assert len(sources) > 15
    assert [use for path in sources for use in python_shell_uses(path)] == []
    scratch = Path(tempfile.mkdtemp(dir=ROOT / "tests"))  # under ROOT: the paths are reported relative to it
    try:
        sample = scratch / "sample.py"
        sample.write_text("import os, subprocess\nos.system('x')\nsubprocess.run('x', shell=True)\n"
                          "subprocess.run(['x'], shell=False)\nos.popen('x')\n")
        assert len(python_shell_uses(sample)) == 3
    finally:
        shutil.rmtree(scratch)


def strings_in(value, key: str = ""):
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from strings_in(item, str(name))
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item, key)


def role_defaults() -> dict[str, str]:
    values = {}
    for path in ROOT.glob("roles/*/defaults/main.yml"):
        values.update({k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if isinstance(v, str)})
    return values


def test_security_no_task_passes_sql_text_and_migrations_come_from_the_controller_lookup():
    tasks = project_tasks()
    sql = [(file, task.get("name"), key, text[:80]) for file, task, module, args in tasks
           for key, text in strings_in(args) if key not in MESSAGE_ARGS and SQL_TEXT.search(text)]
    assert not sql, f"SQL text in task arguments: {sql}"
    # The one way SQL reaches a module: `migrations`, the files of riskmgr_migrations_src read on the
    # controller by the riskmgr_migrations lookup (the ledger records their sha256), as the riskmgr
    # role's internal variable. Follow every `migrations` argument back to it: directly, through the
    # role's module_defaults, or through a step role's input, which every caller sets to it.
    role_vars = yaml.safe_load((ROOT / "roles" / "riskmgr" / "vars" / "main.yml").read_text())
    assert MIGRATIONS_LOOKUP.match(role_vars[MIGRATIONS_FACT]), role_vars[MIGRATIONS_FACT]
    assert role_vars["__riskmgr_migration_args"]["migrations"] == "{{ %s }}" % MIGRATIONS_FACT
    step_inputs = {}  # step role input -> every value a caller gives it
    for file, task, module, _args in tasks:
        if module.endswith("include_role"):
            for name, value in (task.get("vars") or {}).items():
                if name.endswith("_migrations"):
                    step_inputs.setdefault(name, []).append((file, value))
    migration_args = [(file, args["migrations"]) for file, _task, module, args in tasks if "migrations" in args]
    assert len(migration_args) >= 2 and step_inputs, (migration_args, step_inputs)
    for file, value in migration_args:
        name = JINJA_NAME.match(str(value))
        assert name and (name[1] == MIGRATIONS_FACT or name[1] in step_inputs), f"{file}: migrations: {value}"
    for name, callers in step_inputs.items():
        for file, value in callers:
            assert value == "{{ %s }}" % MIGRATIONS_FACT, f"{file}: {name}: {value}"
    setters = [file for file, _task, module, args in tasks if module.endswith("set_fact") and
               any(key == MIGRATIONS_FACT or key in step_inputs for key in args)]
    assert not setters, f"set_fact of the migrations in {setters}"
    for path in [*ROOT.glob("inventory/**/*.yml"), *ROOT.glob("roles/*/defaults/*.yml")]:
        assigned = set(yaml.safe_load(path.read_text()) or {})
        assert not assigned & ({MIGRATIONS_FACT} | set(step_inputs)), f"{path}: sets the migrations"


OPTION_SPEC = re.compile(r"""["'](\w+)["']\s*:\s*\{\s*["']type["']""")


def test_security_no_module_option_takes_sql():
    # The argument specs as the modules declare them (library/ and the shared specs in module_utils/).
    options = {name for path in [*ROOT.glob("library/*.py"), *ROOT.glob("module_utils/*.py")]
               for name in OPTION_SPEC.findall(path.read_text())}
    assert {"path", "migrations", "backup_dir", "target_version"} <= options, options
    assert not {o for o in options if re.search(r"sql|query|statement|script|pragma", o)}, options


# Module-level constants that name a table: fixed strings, never input.
CONSTANT_IDENTIFIERS = {"VERSION_TABLE", "LEDGER_TABLE", "PROVENANCE_TABLE"}
# sqlite_common helpers whose text is only quote_identifier() names, "?" placeholders, "=", "," and AND.
IDENTIFIER_HELPERS = {"quote_identifier", "identifier_list", "equality_clause", "placeholders"}
SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|EXPLAIN|ATTACH|WITH)\b")
SQL_RUNNERS = {"execute", "executemany", "executescript"}
# Every SQL text in module_utils/ that is not a literal, and is not an f-string whose only
# interpolations are identifiers through quote_identifier() or the table constants above.
# (file, function, source of the SQL expression) -> where its text comes from.
ALLOWED_DYNAMIC_SQL = {
    ("sqlite_common.py", "integrity_result", "f'PRAGMA {INTEGRITY_PRAGMAS[level]}({INTEGRITY_LINES})'"):
        "PRAGMA name from the fixed dict INTEGRITY_PRAGMAS (level is one of the module's choices, a KeyError "
        "otherwise), the row limit a constant int",
    ("sqlite_migration.py", "planned_schema", "sql"):
        "CREATE statements read from the database's own sqlite_master, replayed into an in-memory scratch "
        "database to show the schema after the change; the real database is not touched",
    ("sqlite_migration.py", "apply_step", "step.sql"):
        "a statement of the migration files (read on the controller by the riskmgr_migrations lookup, split one "
        "object per statement and checksummed in the ledger), an ADD COLUMN made by sqlite_shapes.add_column_sql "
        "from those files' column definitions (quote_identifier), or a DROP built with quote_identifier",
    ("sqlite_migration.py", "put_back", "f'PRAGMA {pragma} = {int(value)}'"):
        "a pragma name from the constant REBUILD_PRAGMAS (or foreign_keys, proof_settings), its previous value "
        "read back as an int",
    ("sqlite_migration.py", "rebuild_settings", "f'PRAGMA {pragma}'"):
        "a pragma name from the constant REBUILD_PRAGMAS",
    ("sqlite_migration.py", "rebuild_settings", "f'PRAGMA {pragma} = {value}'"):
        "a pragma name and its int value from the constant REBUILD_PRAGMAS",
    ("sqlite_plan.py", "columns_removed", "original_sql"):
        "a table's own sqlite_master text, recorded in the provenance by the migration that changed it, "
        "run in an in-memory scratch database to read its columns",
    ("sqlite_rebuild.py", "rebuild_table", "original_sql"):
        "a table's own sqlite_master text from before the migration changed it (recorded in the provenance "
        "in the migration's transaction): the table made again exactly as it was",
    ("sqlite_rebuild.py", "rebuild_table", "sql"):
        "the table's own indexes and triggers, their sqlite_master text read just before the rebuild",
    ("sqlite_rebuild.py", "rebuild_definition", "original_sql"):
        "as rebuild_table, for the write proof in a transaction that is always rolled back",
    ("sqlite_rebuild.py", "rebuild_definition", "sql"):
        "the table's own triggers, their sqlite_master text read just before, in the proof's rolled-back transaction",
    ("sqlite_catalog.py", "build_reference", "statement.sql"):
        "the migration files' statements, into an in-memory schema-only reference database",
    ("sqlite_history.py", "read_versions", "select"):
        "assembled only from string literals (which columns the table has) and VERSION_TABLE",
    ("sqlite_history.py", "read_versions",
     "f'SELECT version, {success}, {applied} FROM {VERSION_TABLE} ORDER BY version'"):
        "success and applied are the literal column names or literals ('1', 'NULL'), chosen by what the table has",
    ("sqlite_verification.py", "check_sample_queries", "f'SELECT COUNT(*) FROM {table} failed: {err}'"):
        "an error message; the query it reports quotes the table with quote_identifier",
    ("sqlite_verification.py", "query_plan", "f'EXPLAIN QUERY PLAN {query}'"):
        "the `-- used-by:` query of a migration file (controller), or that query with INDEXED BY and the "
        "index's quoted name inserted; EXPLAIN QUERY PLAN plans it without running it, and sqlite3 refuses "
        "a second statement",
}


def safe_interpolation(node: ast.expr) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IDENTIFIER_HELPERS:
        return True
    return isinstance(node, ast.Name) and node.id in CONSTANT_IDENTIFIERS


def sql_expressions(path: Path):
    """(function, expression source, why it needs a look) for each SQL text of one module that is not plainly safe."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_RUNNERS \
                and node.args and not isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
            found.append((function, ast.unparse(node.args[0]), "runs SQL that is not a literal"))
        if isinstance(node, ast.JoinedStr):
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
            if SQL_START.match(literal) and not all(safe_interpolation(v) for v in values):
                found.append((function, ast.unparse(node), "an f-string of SQL with a value in it"))
            return  # its parts are not SQL on their own
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
                and isinstance(node.left.value, str) and SQL_START.match(node.left.value):
            found.append((function, ast.unparse(node), "SQL built with %"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
                and isinstance(node.func.value, ast.Constant) and SQL_START.match(str(node.func.value.value)):
            found.append((function, ast.unparse(node), "SQL built with .format()"))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def test_security_no_sql_is_built_from_variables_except_the_listed_safe_cases():
    found = {(path.name, function, source): why
             for path in sorted((ROOT / "module_utils").glob("*.py")) + sorted((ROOT / "library").glob("*.py"))
             for function, source, why in sql_expressions(path)}
    unexplained = {key: why for key, why in found.items() if key not in ALLOWED_DYNAMIC_SQL}
    assert not unexplained, f"SQL built from values, not in ALLOWED_DYNAMIC_SQL: {unexplained}"
    stale = set(ALLOWED_DYNAMIC_SQL) - set(found)
    assert not stale, f"listed in ALLOWED_DYNAMIC_SQL but no longer in the code: {stale}"
    # The identifiers that are interpolated are quoted the way SQLite quotes them.
    from sqlite_common import quote_identifier
    with closing(sqlite3.connect(":memory:")) as conn:
        name = 'odd "name"; DROP TABLE x; --'
        conn.execute(f"CREATE TABLE {quote_identifier(name)} (a)")
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == [name]


def test_security_the_sql_check_catches_values_in_sql():
    code = ('def f(conn, table, value):\n'
            '    conn.execute(f"SELECT * FROM {table}")\n'
            '    conn.execute("DELETE FROM t WHERE a = %s" % value)\n'
            '    conn.execute("UPDATE t SET a = {}".format(value))\n'
            '    sql = "SELECT 1"\n'
            '    conn.execute(sql)\n'
            '    conn.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)}")\n'
            '    conn.execute("SELECT a FROM t WHERE b = ?", (value,))\n')
    scratch = Path(tempfile.mkdtemp())
    try:
        (scratch / "sample.py").write_text(code)
        whys = [why for _function, _source, why in sql_expressions(scratch / "sample.py")]
    finally:
        shutil.rmtree(scratch)
    assert sorted(whys) == sorted(["an f-string of SQL with a value in it", "SQL built with %",
                                   "SQL built with .format()", "runs SQL that is not a literal",
                                   "runs SQL that is not a literal", "runs SQL that is not a literal"]), whys
