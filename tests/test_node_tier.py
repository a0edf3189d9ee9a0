"""The node tier under real mpiexec: many nodes made on one machine (``--node-size``, and MPICH's cliques), their
outputs equal to one rank's, kills at random instants, and stalls at both tiers (the outputs of flat runs equal one
rank's: test_run.py)."""

import os
import random
import signal
import subprocess
import time

import pytest

from helpers import (checkpoint_datasets, done_in_checkpoint, job_environment, kill_job, many_frames_input,
                     mpicolor_command, outputs, rank_pid, run_mpicolor, wait_for_lock)
from mpicolor.bench import run as bench_run
from mpicolor.job.report import EXIT_OK, EXIT_RANK_LOST

pytestmark = pytest.mark.mpi

SETTINGS = ["--simulate", "0.02", "--checkpoint-every", "0.2", "--split", "1:0"]


def run_to(tmp_path, input_dir, name, ranks, *options):
    """OUTPUT_DIR ``name`` of an uninterrupted run with ``SETTINGS``."""
    finished = run_mpicolor(ranks, "run", input_dir, tmp_path / name, *SETTINGS, *options)
    assert finished.returncode == EXIT_OK, finished.stderr
    return tmp_path / name


@pytest.fixture
def small(tmp_path):
    """144 frames, and one rank's outputs (2.9 s)."""
    input_dir = many_frames_input(tmp_path / "input")
    return input_dir, run_to(tmp_path, input_dir, "one-rank", 1)


def test_8_ranks_as_4_nodes_give_the_outputs_of_1_rank(small, tmp_path):
    input_dir, one_rank = small
    tiered = run_mpicolor(8, "run", input_dir, tmp_path / "tiered", *SETTINGS, "--node-size", "2")
    assert tiered.returncode == EXIT_OK, tiered.stderr
    assert "8 ranks on 4 nodes: rank 0 hands ranges to the node coordinators (ranks 1, 2, 4, 6)" in tiered.stderr
    assert (outputs(tmp_path / "tiered"), checkpoint_datasets(tmp_path / "tiered")) == (
        outputs(one_rank), checkpoint_datasets(one_rank))


def test_mpich_cliques_make_nodes_that_the_tier_finds_by_itself(small, tmp_path):
    if bench_run.is_open_mpi(bench_run.mpiexec_path()):
        pytest.skip("MPICH's MPIR_CVAR_NUM_CLIQUES makes nodes on one machine; Open MPI has no such switch "
                    "(--node-size does it under both)")
    input_dir, one_rank = small
    cliques = dict(os.environ, MPIR_CVAR_NUM_CLIQUES="3", MPIR_CVAR_CLIQUES_BY_BLOCK="1")
    tiered = run_mpicolor(6, "run", input_dir, tmp_path / "tiered", *SETTINGS, env=cliques)
    assert tiered.returncode == EXIT_OK, tiered.stderr
    assert "6 ranks on 3 nodes: rank 0 hands ranges to the node coordinators (ranks 1, 2, 4)" in tiered.stderr
    assert outputs(tmp_path / "tiered") == outputs(one_rank)


@pytest.mark.parametrize("victim", ["whole-job", "node-coordinator"])
def test_kills_at_random_instants_then_a_rerun_gives_the_uninterrupted_outputs(tmp_path, victim):
    input_dir = many_frames_input(tmp_path / "input", copies=6)
    uninterrupted = run_to(tmp_path, input_dir, "uninterrupted", 7, "--node-size", "3")
    expected = (outputs(uninterrupted), checkpoint_datasets(uninterrupted))
    # 432 frames at 20 ms on 6 computing ranks: 1.4 s of frames after the lock, so every kill lands mid-run
    for delay in random.Random(20261208 + len(victim)).sample([i / 10 for i in range(1, 10)], 3):
        output_dir, ranks = tmp_path / f"killed-{delay}", tmp_path / f"ranks-{delay}"
        job = subprocess.Popen(mpicolor_command(7, "run", input_dir, output_dir, *SETTINGS, "--node-size", "3"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=job_environment(ranks))
        wait_for_lock(job, output_dir)
        time.sleep(delay)
        if victim == "whole-job":
            kill_job(job)
        else:
            os.kill(rank_pid(ranks, 3), signal.SIGKILL)  # the coordinator of ranks 3-5
        try:
            job.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            kill_job(job)
            pytest.fail(f"the job did not end within 30 s of the kill at {delay} s")
        rerun = run_mpicolor(7, "run", input_dir, output_dir, *SETTINGS, "--node-size", "3")
        assert rerun.returncode == EXIT_OK, f"rerun after a kill at {delay} s failed:\n{rerun.stderr}"
        assert (outputs(output_dir), checkpoint_datasets(output_dir)) == expected, f"kill at {delay} s"


@pytest.mark.parametrize("stopped, words", [
    (5, "rank 5 on "),  # a worker of the node of ranks 3-5: its node coordinator gives up on it
    (3, "rank 3 (node coordinator of ranks 3-5) on "),  # a node coordinator: rank 0 gives up on it and its node
], ids=["worker", "node-coordinator"])
def test_a_rank_stopped_at_either_tier_is_given_up_on_and_the_outputs_are_complete(tmp_path, stopped, words):
    # 1,440 frames at 20 ms on 8 computing ranks: 3.6 s, so that the stopped rank still holds work
    input_dir = many_frames_input(tmp_path / "input", copies=20)
    flat = run_to(tmp_path, input_dir, "flat", 8)
    output_dir, ranks = tmp_path / "out", tmp_path / "ranks"
    job = subprocess.Popen(mpicolor_command(9, "run", input_dir, output_dir, *SETTINGS, "--stall-timeout", "3",
                                            "--node-size", "3"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=job_environment(ranks))
    try:
        deadline = time.monotonic() + 60
        while not done_in_checkpoint(output_dir, "set00.tar") and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(rank_pid(ranks, stopped), signal.SIGSTOP)
        started = time.monotonic()
        _, log = job.communicate(timeout=60)
    finally:
        kill_job(job)
    assert time.monotonic() - started < 30
    assert job.returncode == EXIT_RANK_LOST, log
    assert words in log and "without answering (--stall-timeout 3)" in log and "Traceback" not in log
    assert f"rank {stopped} was lost" in log
    assert outputs(output_dir) == outputs(flat)
