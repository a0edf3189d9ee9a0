"""`mpicolor run` under real mpiexec: outputs, rank-count independence, resume after kills."""

import json
import os
import random
import signal
import subprocess
import tarfile
import time

import numpy as np
import pytest

from helpers import (checkpoint_datasets, job_environment, kill_job, many_frames_input, mpicolor_command, outputs,
                     rank_pid, read_checkpoint, run_mpicolor, wait_for_lock)
from mpicolor.state.atomic import TEMP_SUFFIX
from mpicolor.state.checkpoint import CHECKPOINT, CHECKPOINT_FOLDER
from mpicolor.state.output_dir import RUN_LOG, RUN_SUMMARY
from mpicolor.engine.palette import palette_from_bytes

pytestmark = pytest.mark.mpi


@pytest.mark.portable
def test_outputs_equal_extract_palette_on_the_same_bytes(input_dir, tmp_path):
    output_dir = tmp_path / "out"
    finished = run_mpicolor(2, "run", input_dir, output_dir)
    assert finished.returncode == 0, finished.stderr
    tables = outputs(output_dir)
    assert sorted(tables) == ["hist_bottle.tar_db.sqlite", "hist_car.tar_db.sqlite", "hist_person.tar_db.sqlite"]
    with tarfile.open(input_dir / "car.tar") as tar:
        expected = [(member.name, tar.extractfile(member).read()) for member in tar.getmembers()]
    rows = tables["hist_car.tar_db.sqlite"]["images"]
    assert [row[0] for row in rows] == [name for name, _ in expected]
    for row, (name, frame_bytes) in zip(rows, expected):
        palette = palette_from_bytes(frame_bytes)
        assert list(row[1:6]) == palette.packed.tolist()
        np.testing.assert_allclose(row[6:11], palette.shares, rtol=1e-6)
    assert tables["hist_car.tar_db.sqlite"]["failures"] == []
    statuses = {name: data["status"] for name, data in checkpoint_datasets(output_dir).items()}
    assert statuses == {"bottle.tar": "complete", "car.tar": "complete", "person.tar": "complete"}
    assert "frames/s" in finished.stderr and "rank 1:" in finished.stderr


def test_results_do_not_depend_on_the_rank_count(input_dir, tmp_path):
    results = {}
    for ranks in (1, 2, 3, 4):
        output_dir = tmp_path / f"out{ranks}"
        finished = run_mpicolor(ranks, "run", input_dir, output_dir)
        assert finished.returncode == 0, finished.stderr
        results[ranks] = (outputs(output_dir), checkpoint_datasets(output_dir))
    for ranks in (2, 3, 4):
        assert results[ranks] == results[1], f"{ranks} ranks differ from 1 rank"


@pytest.mark.portable
def test_rerun_skips_complete_tarballs(input_dir, tmp_path):
    output_dir = tmp_path / "out"
    assert run_mpicolor(1, "run", input_dir, output_dir).returncode == 0
    before = outputs(output_dir)
    again = run_mpicolor(2, "run", input_dir, output_dir)
    assert again.returncode == 0, again.stderr
    assert "3 already done, 0 to compute" in again.stderr
    assert outputs(output_dir) == before


def test_resuming_with_other_settings_is_refused(input_dir, tmp_path):
    output_dir = tmp_path / "out"
    assert run_mpicolor(1, "run", input_dir, output_dir).returncode == 0
    refused = run_mpicolor(2, "run", input_dir, output_dir, "--clusters", "3")
    assert refused.returncode == 3
    assert "clusters=5" in refused.stderr and "clusters=3" in refused.stderr and "start over" in refused.stderr


def kill_at(input_dir, output_dir, settings, delay, whole_job, tmp_path):
    """Start a 2-rank run, and SIGKILL it (all of it, or rank 1) ``delay`` seconds after rank 0 took the lock."""
    ranks = tmp_path / f"ranks-{delay}"
    job = subprocess.Popen(mpicolor_command(2, "run", input_dir, output_dir, *settings), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=job_environment(ranks))
    wait_for_lock(job, output_dir)
    time.sleep(delay)
    if whole_job:
        kill_job(job)
    else:
        os.kill(rank_pid(ranks, 1), signal.SIGKILL)
    try:
        job.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        kill_job(job)
        pytest.fail("the job did not end within 30 s after one rank was killed")


@pytest.mark.parametrize("whole_job", [pytest.param(True, id="whole-job", marks=pytest.mark.portable),
                                       pytest.param(False, id="one-rank")])
def test_sigkill_at_random_instants_then_rerun_equals_uninterrupted(tmp_path, whole_job):
    input_dir = many_frames_input(tmp_path / "input")
    # 144 frames at 20 ms on 2 ranks: 1.44 s of frames after the lock, so every kill (<= 0.95 s) lands mid-run
    settings = ["--simulate", "0.02", "--checkpoint-every", "0.05"]
    reference = tmp_path / "reference"
    assert run_mpicolor(2, "run", input_dir, reference, *settings).returncode == 0
    expected = (outputs(reference), checkpoint_datasets(reference))
    instants = random.Random(20261125 + whole_job).sample([i / 20 for i in range(1, 20)], 5)
    for delay in instants:
        output_dir = tmp_path / f"killed-{delay}"
        kill_at(input_dir, output_dir, settings, delay, whole_job, tmp_path)
        if os.path.exists(output_dir / CHECKPOINT):
            # every file of it readable, through the entry point and one by one: no fallback hides a damaged one
            checkpoint_datasets(output_dir)
            read_checkpoint(output_dir)
        rerun = run_mpicolor(2, "run", input_dir, output_dir, *settings)
        assert rerun.returncode == 0, f"rerun after a kill at {delay} s failed:\n{rerun.stderr}"
        assert (outputs(output_dir), checkpoint_datasets(output_dir)) == expected, f"kill at {delay} s"
        leftovers = [name for folder in (output_dir, output_dir / CHECKPOINT_FOLDER)
                     for name in os.listdir(folder) if name.endswith(TEMP_SUFFIX)]
        assert leftovers == []
        with open(output_dir / RUN_SUMMARY) as summary:
            assert json.load(summary)["frames"] > 0, f"the kill at {delay} s should land while frames are to compute"


def test_a_second_live_run_on_the_same_output_dir_is_refused(tmp_path):
    input_dir = many_frames_input(tmp_path / "input")
    output_dir = tmp_path / "out"
    first = subprocess.Popen(mpicolor_command(2, "run", input_dir, output_dir, "--simulate", "0.1"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lock(first, output_dir)
        second = run_mpicolor(1, "run", input_dir, output_dir, "--simulate", "0.02")
        assert second.returncode == 3
        assert "in use by another mpicolor run (pid" in second.stderr
    finally:
        _, log = first.communicate(timeout=60)
    assert first.returncode == 0, log


def test_the_mpi_library_version_in_info_and_in_the_logs_holds_no_nul_byte(input_dir, tmp_path):
    # Open MPI's version string ends in its C string's NUL, which made every log that named it binary
    info = run_mpicolor(2, "info", "--json")
    assert info.returncode == 0, info.stderr
    version = json.loads(info.stdout)["mpi"]
    assert version and "\0" not in version
    finished = run_mpicolor(1, "run", input_dir, tmp_path / "out", "--simulate", "0")
    assert finished.returncode == 0, finished.stderr
    run_log = (tmp_path / "out" / RUN_LOG).read_text()
    assert f"MPI: {version}" in finished.stderr and f"MPI: {version}" in run_log
    assert "\0" not in finished.stderr and "\0" not in run_log
