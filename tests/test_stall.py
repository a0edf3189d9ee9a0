"""A rank that stops answering (a hung file system or device) never freezes the job, under real mpiexec."""

import os
import signal
import subprocess
import time

import pytest

from helpers import mpicolor_command, outputs, run_mpicolor
from mpicolor.state.output_dir import LOCK
from test_run import checkpoint_datasets, job_processes, many_frames_input


def test_a_rank_stopped_with_sigstop_is_given_up_on_and_the_outputs_are_complete(tmp_path):
    input_dir = many_frames_input(tmp_path / "input")
    settings = ["--simulate", "0.02", "--checkpoint-every", "0.5", "--stall-timeout", "3"]
    reference = tmp_path / "reference"
    assert run_mpicolor(2, "run", input_dir, reference, *settings).returncode == 0
    output_dir = tmp_path / "out"
    job = subprocess.Popen(mpicolor_command(3, "run", input_dir, output_dir, *settings), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(output_dir / LOCK) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # every rank is computing by now
        stopped = [pid for pid, rank in job_processes(job.pid).items() if rank == 2]
        assert stopped, "rank 2 was not found"
        os.kill(stopped[0], signal.SIGSTOP)
        started = time.monotonic()
        _, log = job.communicate(timeout=60)
    finally:
        for pid in job_processes(job.pid):  # whatever is left if the job hung
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert time.monotonic() - started < 30
    assert job.returncode == 5, log
    assert "rank 2 on " in log and "without answering (--stall-timeout 3)" in log
    assert "rank 2 was lost" in log and "Traceback" not in log
    assert (outputs(output_dir), checkpoint_datasets(output_dir)) == (outputs(reference),
                                                                      checkpoint_datasets(reference))


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_stall_timeout_that_is_not_positive_is_a_usage_error(tmp_path, value, input_dir):
    refused = run_mpicolor(1, "run", input_dir, tmp_path / "out", "--stall-timeout", value)
    assert refused.returncode == 2 and f"stall_timeout={float(value)} should be > 0 seconds" in refused.stderr
