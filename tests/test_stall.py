"""A rank that stops answering (a hung file system or device) never freezes the job, under real mpiexec."""

import os
import signal
import subprocess
import time

import pytest

from helpers import (checkpoint_datasets, done_in_checkpoint, job_environment, kill_job, many_frames_input,
                     mpicolor_command, outputs, rank_pid, run_mpicolor)

pytestmark = pytest.mark.mpi


def test_a_rank_stopped_with_sigstop_is_given_up_on_and_the_outputs_are_complete(tmp_path):
    # 432 frames at 20 ms on 3 ranks: about 3 s, so that rank 2 still holds chunks when it is stopped
    input_dir = many_frames_input(tmp_path / "input", copies=6)
    settings = ["--simulate", "0.02", "--checkpoint-every", "0.5", "--stall-timeout", "3"]
    reference = tmp_path / "reference"
    assert run_mpicolor(2, "run", input_dir, reference, *settings).returncode == 0
    output_dir = tmp_path / "out"
    ranks = tmp_path / "ranks"
    job = subprocess.Popen(mpicolor_command(3, "run", input_dir, output_dir, *settings), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=job_environment(ranks))
    try:
        # frames in the checkpoint: the run is computing, and every worker holds chunks ahead
        deadline = time.monotonic() + 60
        while not done_in_checkpoint(output_dir, "set00.tar") and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(rank_pid(ranks, 2), signal.SIGSTOP)
        started = time.monotonic()
        _, log = job.communicate(timeout=60)
    finally:
        kill_job(job)  # whatever is left if the job hung
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
