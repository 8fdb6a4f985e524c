"""The large-fleet bench's accounting and projection (bench/bench_common.py, bench/fleet_model.py,
bench/loopback_sshd.py).

The bench's figures are only as good as two things tested here: that each CPU-second lands on
the right side (the controller's process, its children, the ssh masters that detach, the hosts'
sshd sessions), measured on real processes and a real sshd; and that the projection's model does
what docs/awx-and-large-fleets.md says, including Ansible's own split of a fleet into serial batches,
checked against a real ansible-playbook run. No timing is asserted: CPU-seconds are attributed,
never compared with a speed.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import bench_common  # noqa: E402  (bench/ is not a package: bench/run runs bench.py as a script)
import fleet_model  # noqa: E402
import loopback_sshd  # noqa: E402

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

# A process that burns CPU in itself, then waits for a child that burns twice as much.
BURN = """
import subprocess, sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
burn({own})
subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + {child}\\n"
                "while time.process_time() < end: pass"], check=True)
"""


def test_run_measured_splits_the_process_own_cpu_from_its_children(tmp_path):
    proc, wall, own, children = bench_common.run_measured(
        [sys.executable, "-c", BURN.format(own=0.3, child=0.6)], env={}, log_file=tmp_path / "log", what="burn")
    assert proc.returncode == 0
    # Python's start-up adds a few hundredths to each side; clock ticks are 10 ms.
    assert 0.28 <= own < 0.5, own
    assert 0.58 <= children < 0.8, children
    assert wall >= own + children - 0.05  # one after the other


def test_run_measured_names_the_command_that_failed(tmp_path):
    with pytest.raises(bench_common.BenchError, match=r"^ansible-playbook x \(y\) failed \(exit 3\): .*\nbad thing"):
        bench_common.run_measured([sys.executable, "-c", "import sys; print('bad thing'); sys.exit(3)"], env={},
                           log_file=tmp_path / "log", what="ansible-playbook x (y)")


@pytest.fixture
def sshd_pool(tmp_path):
    if not loopback_sshd.SSHD.is_file() or shutil.which("ssh") is None:
        pytest.skip("sshd or ssh missing (apt-get install openssh-server openssh-client)")
    pool = loopback_sshd.SshdPool(tmp_path / "sshd", 1)
    yield pool
    pool.stop()


def ssh_command(pool: loopback_sshd.SshdPool, control_dir: Path, command: str) -> subprocess.CompletedProcess:
    address, port = pool.endpoints[0]
    return subprocess.run(["ssh", "-i", str(pool.key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                           "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
                           "-o", f"ControlPath={control_dir}/%C", f"root@{address}", command],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_host_side_cpu_and_the_detached_master_are_both_accounted_and_the_master_ends(sshd_pool, tmp_path):
    control_dir = Path(tempfile.mkdtemp(prefix="rmbt", dir="/tmp"))  # a ControlPath must stay short
    try:
        before = sshd_pool.sessions_cpu()
        # CPU on the host, then 50 MB back through the connection, which the master encrypts.
        burn = (sys.executable + " -c 'import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: "
                "pass' && head -c 50000000 /dev/zero")
        result = ssh_command(sshd_pool, control_dir, burn)
        assert result.returncode == 0, result.stderr
        masters = loopback_sshd.processes_naming(str(control_dir))
        assert len(masters) == 1  # ControlPersist left one master behind the finished client
        cpu, count = loopback_sshd.stop_control_masters(control_dir)
        assert count == 1 and cpu > 0
        # The session, and the 0.4 s the command burnt under it, reach the listener once reaped.
        assert sshd_pool.sessions_cpu() - before >= 0.38
        deadline = time.monotonic() + 5
        while loopback_sshd.processes_naming(str(control_dir)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loopback_sshd.processes_naming(str(control_dir)) == []
    finally:
        loopback_sshd.stop_control_masters(control_dir)
        shutil.rmtree(control_dir, ignore_errors=True)


# --- the model ---------------------------------------------------------------------------------------

def test_fit_line_recovers_a_line():
    assert fleet_model.fit_line([1, 4, 8, 16], [2 + 3 * x for x in (1, 4, 8, 16)]) == pytest.approx((2.0, 3.0))


def serial_play(tmp_path: Path, hosts: int, serial: list) -> list[int]:
    """The batch sizes a real ansible-playbook makes: each batch says its own size once."""
    inventory = tmp_path / f"inventory-{hosts}.yml"
    inventory.write_text("all:\n  hosts:\n" + "".join(f"    h{i}:\n" for i in range(hosts))
                         + f"  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {sys.executable}\n")
    play = tmp_path / "serial.yml"
    play.write_text(textwrap.dedent(f"""\
        - name: Batches
          hosts: all
          gather_facts: false
          serial: {json.dumps(serial)}
          tasks:
            - name: Say the batch size
              ansible.builtin.debug:
                msg: "batch={{{{ ansible_play_batch | length }}}}"
              run_once: true
        """))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(play)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False, env={"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [int(n) for n in re.findall(r'"msg": "batch=(\d+)"', proc.stdout)]


@pytest.mark.slow
@pytest.mark.parametrize("hosts, serial", [(1, fleet_model.DEFAULT_SERIAL), (10, fleet_model.DEFAULT_SERIAL),
                                           (17, fleet_model.DEFAULT_SERIAL), (9, [2, "30%"]),
                                           (20, [1, "25%"])])
def test_serial_batches_are_the_batches_ansible_playbook_makes(tmp_path, hosts, serial):
    assert fleet_model.serial_batches(hosts, serial) == serial_play(tmp_path, hosts, serial)


COSTS = fleet_model.FleetCosts(controller_fixed=4.0, controller_per_host=1.0, controller_per_batch=0.5, main_fixed=2.0,
                         main_per_host=0.2, main_per_batch=0.1, host_wall=3.0, host_idle=2.0, host_cpu=1.5)


def test_projection_adds_the_controller_cpu_over_its_cores_to_the_hosts_waves():
    projected = fleet_model.project_wall(COSTS, 100, 10, fleet_model.DEFAULT_SERIAL, 4)
    assert projected["batches"] == [1, 25, 74]
    controller = 4.0 + 1.0 * 100 + 0.5 * 2  # CPU-seconds, over min(4 cores, 10 forks)
    waves = 1 + 3 + 8  # ceil(batch / forks) per batch
    assert projected["seconds"] == pytest.approx(controller / 4 + waves * 3.0)
    assert not projected["main_bound"]


def test_projection_is_bound_by_the_main_process_when_cores_are_many():
    projected = fleet_model.project_wall(COSTS, 100, 50, fleet_model.DEFAULT_SERIAL, 64)
    main = 2.0 + 0.2 * 100 + 0.1 * 2  # one core, whatever the others do
    assert projected["main_bound"]
    assert projected["controller_part"] == pytest.approx(main)
    assert projected["seconds"] == pytest.approx(main + (1 + 1 + 2) * 3.0)


def test_projection_slices_run_side_by_side_each_with_its_own_canary():
    projected = fleet_model.project_wall(COSTS, 100, 10, fleet_model.DEFAULT_SERIAL, 4, slices=4)
    assert projected["hosts_per_slice"] == 25
    assert projected["batches"] == [1, 6, 18]  # serial applies inside each slice
    assert projected["seconds"] == pytest.approx((4.0 + 25 + 0.5 * 2) / 4 + (1 + 1 + 2) * 3.0)


def test_projection_with_hosts_on_the_controllers_cores_moves_their_cpu_to_the_controller():
    projected = fleet_model.project_wall(COSTS, 8, 8, [8], 2, hosts_share_cores=True)
    assert projected["seconds"] == pytest.approx((4.0 + 8 * 1.0 + 8 * 1.5) / 2 + 1 * 2.0)
    assert math.isclose(fleet_model.project_wall(COSTS, 8, 8, [8], 2)["seconds"], (4.0 + 8) / 2 + 3.0)
