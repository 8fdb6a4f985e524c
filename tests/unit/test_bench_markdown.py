"""bench/run --markdown: the tables of docs/benchmarks.md come from a results file, written between
their markers, never pasted by hand (bench/bench_report.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import bench_report  # noqa: E402  (bench/ is not a package: bench/run runs bench.py as a script)

PAGE = """# Benchmarks

Prose before, kept.

{sizes_begin}
old size tables
{sizes_end}

Prose between, kept.

{fleet_begin}
old fleet tables
{fleet_end}

Prose after, kept.
"""


def page() -> str:
    (sizes_begin, sizes_end), (fleet_begin, fleet_end) = bench_report.markers("sizes"), bench_report.markers("fleet")
    return PAGE.format(sizes_begin=sizes_begin, sizes_end=sizes_end, fleet_begin=fleet_begin, fleet_end=fleet_end)


def test_only_what_lies_between_a_sections_markers_is_replaced():
    text = bench_report.replace_sections(page(), {"fleet": "| new | table |\n"}, Path("p.md"))
    assert "old fleet tables" not in text and "| new | table |" in text
    assert text == page().replace("old fleet tables", "| new | table |")
    # Again: the same page (a refresh does not pile up blank lines or tables).
    assert bench_report.replace_sections(text, {"fleet": "| new | table |"}, Path("p.md")) == text


def test_a_page_without_the_markers_is_refused_naming_the_file_and_the_section():
    with pytest.raises(ValueError, match=r"^p\.md: no '<!-- BEGIN bench/run --markdown: sizes -->' followed by"):
        bench_report.replace_sections("# Benchmarks\n", {"sizes": "x"}, Path("p.md"))


def test_the_docs_page_has_both_sections_for_bench_run_to_write():
    text = bench_report.DOCS.read_text(encoding="utf-8")
    for name in bench_report.SECTIONS:
        begin, end = bench_report.markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end), name


@pytest.mark.parametrize("results, why", [
    ({"quick": True, "sizes": [{}]}, "--quick run"),
    ({"quick": False, "sizes": []}, "neither per-size nor large-fleet results"),
])
def test_bench_run_markdown_refuses_results_that_are_not_figures_for_the_docs(tmp_path, results, why):
    docs = tmp_path / "benchmarks.md"
    docs.write_text(page(), encoding="utf-8")
    stored = tmp_path / "results.json"
    stored.write_text(json.dumps(results), encoding="utf-8")
    done = subprocess.run([sys.executable, ROOT / "bench" / "bench.py", "--markdown", stored, "--docs", docs],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and why in done.stderr and "nothing was written" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert docs.read_text(encoding="utf-8") == page()


# --- a results file as bench/run writes it, its figures made up ----------------------------------

import bench_common  # noqa: E402
import bench_fleet  # noqa: E402


def figures(n: int, scale: float = 1.0) -> dict:
    """run_figures() of a run on n hosts (bench_fleet.run_figures), made-up but consistent numbers."""
    return {"wall": 10.0 + n * scale, "controller": 4.0 + 2.0 * n * scale, "main": 1.0 + 0.5 * n, "children": 3.0,
            "masters": 0.1, "master_count": n, "hosts_cpu": 4.6 * n, "others_cpu": 0.2, "cores_free": 1.9,
            "module_cpu": 4.4 * n, "module_cpu_per_host": 4.4, "module_wall_per_host": 5.2,
            "module_processes_per_host": 7, "tasks_per_host": 21, "loadavg": 1.5}


def made_up_results() -> dict:
    counts, settings_hosts = [1, 4], 4
    run = lambda n, scale=1.0: {"upgrade": {**figures(n, scale), "downtime_max": 0.2},  # noqa: E731
                                "rerun": figures(n, scale / 2)}
    variants = bench_fleet.settings_to_measure(settings_hosts, None)
    samples = {"sizes": {n: [run(n)] for n in counts}, "one_task": {n: [figures(n, 0.1)] for n in counts},
               "serial": [run(4, 1.2)], "settings": {s.key: [run(settings_hosts, 1.1)] for s in variants}}
    summary = bench_common.summary
    size = {"size_mb_target": 10, "size_mb": 10.1, "rows": {"enforcement_log": 18001, "orders": 18000},
            "build_seconds": 1.0, "downtime_outside_phases": 0.01, "rerun_daemon_stopped": False, "rerun_changed": 0,
            "phases_seconds": {"stop": summary([0.03]), "migrate": summary([0.03])},
            "floor_parts": {"cp": summary([0.01]), "ddl": summary([0.03])},
            "online_writer_trouble": [], "online_rows_lost": []}
    for key, value in [("floor", 0.04), ("manual", 0.18), ("downtime", 0.16), ("playbook_wall", 4.58),
                       ("playbook_cpu", 4.19), ("online_downtime", 0.06), ("plain_restart", 0.07),
                       ("online_longest_gap", 0.07), ("online_longest_lock", 0.01), ("online_wall", 6.02),
                       ("online_cpu", 5.67), ("rerun_wall", 1.78), ("rerun_cpu", 1.84), ("one_task_wall", 0.94),
                       ("one_task_cpu", 0.95)]:
        size[key] = summary([value])
    results = {
        "started": "2026-12-01T10:00:00+00:00", "quick": False, "repeat": 1, "command": "bench/run --repeat 1",
        "machine": {"cpu_model": "Test CPU", "nproc": "2", "os_cpu_count": 2, "commit": "abc1234", "mem_gb": 8.0,
                    "disk": "/dev/test (ext4)", "python": "3.11.7", "sqlite3_cli": "3.40.1",
                    "ansible": "ansible [core 2.19.14]", "loadavg_start": [0.5, 0, 0], "loadavg_end": [0.7, 0, 0]},
        "sizes": [size],
        "scaling": {"size_mb_target": 10, "hosts": {"1": {"forks": 1, "wall": summary([5.9]), "cpu": summary([5.6]),
                                                          "max_host_downtime": summary([0.18])}}},
        "rss": {"ansible.builtin.ping (baseline)": {"peak_rss_mb": 25.7, "process_seconds": 0.19,
                                                    "module_seconds": None},
                "riskmgr_migrate (stop .. start)": {"peak_rss_mb": 53.1, "process_seconds": 5.92,
                                                    "module_seconds": None}},
        "fleet": bench_fleet.fleet_results(10, counts, settings_hosts, samples, variants, "not measured: --no-mitogen"),
    }
    results["targets"] = bench_report.evaluate(results, False)
    return json.loads(json.dumps(results))  # as read back from the file: keys are strings


def test_bench_run_markdown_writes_both_sections_from_a_results_file_and_nothing_else(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text(page(), encoding="utf-8")
    stored = tmp_path / "results.json"
    stored.write_text(json.dumps(made_up_results()), encoding="utf-8")
    done = subprocess.run([sys.executable, ROOT / "bench" / "bench.py", "--markdown", stored, "--docs", docs],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "the sizes and fleet tables rewritten" in done.stdout
    text = docs.read_text(encoding="utf-8")
    assert "old size tables" not in text and "old fleet tables" not in text
    for kept in ("Prose before, kept.", "Prose between, kept.", "Prose after, kept."):
        assert kept in text
    sizes = text.split(bench_report.markers("sizes")[0])[1].split(bench_report.markers("sizes")[1])[0]
    assert "Measured 2026-12-01 10:00:00 UTC, commit abc1234, `bench/run --repeat 1`" in sizes
    assert "floor: cp + v2 DDL in one txn (sqlite3)" in sizes and "with 2 cores" in sizes and "PASS" in sizes
    fleet = text.split(bench_report.markers("fleet")[0])[1].split(bench_report.markers("fleet")[1])[0]
    assert "| upgraded host (v1 to v2) |" in fleet and "| model check: run as measured |" in fleet
    assert "Mitogen: not measured: --no-mitogen." in fleet
    # A second run with the same file changes nothing.
    again = subprocess.run([sys.executable, ROOT / "bench" / "bench.py", "--markdown", stored, "--docs", docs],
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0 and docs.read_text(encoding="utf-8") == text


# --- the reflink filesystem's section -------------------------------------------------------------

import bench_reflink  # noqa: E402


def reflink_results(methods: list, downtime: float = 0.5) -> dict:
    summary = bench_common.summary
    reflink = {"size_mb_target": 600, "size_mb": 615.2, "filesystem": "xfs (reflink=1, loop mount)",
               "ddl": summary([0.4, 0.5, 0.6]), "reflink": summary([0.01]), "ddl_after_reflink": summary([0.55]),
               "downtime": summary([downtime]), "playbook_wall": summary([9.0]),
               "phases_seconds": {"stop": summary([0.03]), "backup": summary([0.01]), "migrate": summary([0.4])},
               "copy_methods": methods}
    return {"started": "2026-12-01T10:00:00+00:00", "quick": False, "repeat": 3,
            "command": "bench/run --reflink-only --sizes 600", "sizes": [], "reflink": reflink,
            "machine": {"cpu_model": "Test CPU", "nproc": "2", "commit": "abc1234", "disk": "/dev/test (ext4)"},
            "targets": [bench_reflink.reflink_target(reflink)]}


@pytest.mark.parametrize("methods, downtime, ok", [
    (["reflink"] * 3, 0.6, True),                          # 0.6 s = 1.2x the DDL's median 0.5 s
    (["reflink"] * 3, 0.7, False),                         # 1.4x
    (["reflink", "copy_file_range", "reflink"], 0.5, False),  # fast, but one backup was not a reflink
])
def test_the_reflink_target_is_the_downtime_against_the_ddl_alone_with_every_backup_a_reflink(methods, downtime, ok):
    target = reflink_results(methods, downtime)["targets"][0]
    assert target["ok"] is ok and target["ratio"] == round(downtime / 0.5, 2) and target["limit"] == 1.25
    assert "copy_method" in target["measured"] and "migrate 0.4" in target["measured"]


def test_a_reflink_run_that_could_not_mount_is_a_miss_that_says_why():
    target = bench_reflink.reflink_target({"size_mb_target": 600, "skipped": "not root: a loop mount needs root"})
    assert not target["ok"] and target["measured"] == "not measured: not root: a loop mount needs root"


def test_bench_run_markdown_writes_only_the_reflink_section_from_a_reflink_only_run(tmp_path):
    begin, end = bench_report.markers("reflink")
    docs = tmp_path / "benchmarks.md"
    docs.write_text(page() + f"\n{begin}\nold reflink table\n{end}\n", encoding="utf-8")
    stored = tmp_path / "results.json"
    stored.write_text(json.dumps(reflink_results(["reflink"] * 3)), encoding="utf-8")
    done = subprocess.run([sys.executable, ROOT / "bench" / "bench.py", "--markdown", stored, "--docs", docs],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "the reflink tables rewritten" in done.stdout, done.stderr
    text = docs.read_text(encoding="utf-8")
    assert "old reflink table" not in text and "old size tables" in text and "old fleet tables" in text
    section = text.split(begin)[1].split(end)[0]
    assert "615.2 MB v1 database on xfs (reflink=1, loop mount)" in section
    assert "PASS  offline downtime on a reflink filesystem (600 MB) <= 1.25x the DDL alone" in section
