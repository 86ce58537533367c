"""A busy machine is named: other processes' CPU share from two samples, and the one-line warning."""

from __future__ import annotations

import subprocess
import sys
import time

from tasks.meters.contention import CpuSample, busy_warning, other_cpu_share, watched


def test_others_share_is_the_machine_busy_time_minus_our_own_over_the_capacity() -> None:
    before = CpuSample(wall_s=0.0, machine_busy_s=100.0, own_s=10.0, cores=2)
    after = CpuSample(wall_s=10.0, machine_busy_s=115.0, own_s=20.0, cores=2)  # we used 10 s, the machine 15 s
    assert other_cpu_share(before, after) == 0.25  # 5 CPU-seconds of 20 available


def test_the_share_stays_within_zero_and_one() -> None:
    before = CpuSample(wall_s=0.0, machine_busy_s=0.0, own_s=0.0, cores=2)
    assert other_cpu_share(before, CpuSample(1.0, 0.5, 1.0, 2)) == 0.0  # counters read at slightly different moments
    assert other_cpu_share(before, CpuSample(1.0, 9.0, 0.0, 2)) == 1.0
    assert other_cpu_share(before, before) == 0.0


def test_the_warning_names_the_candidate_the_share_and_the_limit_only_above_it() -> None:
    assert busy_warning("candidate #2 (prune:0.5)", 0.10, 0.10) is None
    line = busy_warning("candidate #2 (prune:0.5)", 0.35, 0.10)
    assert line is not None and "\n" not in line
    assert (
        line.startswith("candidate #2 (prune:0.5): other processes used 35% of this machine's CPU")
        and "(limit 10%)" in line
    )


def test_a_second_process_spinning_beside_the_measurement_is_seen() -> None:
    spin = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    with watched() as quiet:
        time.sleep(0.5)
    with watched() as busy:
        child = subprocess.Popen([sys.executable, "-c", spin])
        time.sleep(
            1.2
        )  # the child is not waited on inside the block: it is another process, as a test run beside the loop would be
    child.wait()
    assert busy.share > quiet.share and busy.share >= 0.2, (quiet, busy)
