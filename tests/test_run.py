"""`mpicolor run` under real mpiexec: outputs, rank-count independence, resume after kills."""

import json
import os
import random
import signal
import subprocess
import tarfile
import time

import h5py
import numpy as np
import pytest

from helpers import bundled_frames, mpicolor_command, outputs, pack_tarball, read_checkpoint, run_mpicolor
from mpicolor.state.atomic import TEMP_SUFFIX
from mpicolor.state.checkpoint import CHECKPOINT, CHECKPOINT_FOLDER
from mpicolor.state.output_dir import LOCK, RUN_SUMMARY
from mpicolor.engine.palette import palette_from_bytes


def checkpoint_datasets(output_dir):
    """Every dataset and the status of every tarball in the live checkpoint."""
    found = {}
    with h5py.File(os.path.join(output_dir, CHECKPOINT), "r") as h5:
        for name, group in h5["tarballs"].items():
            found[name] = {key: group[key][...].tolist() for key in group} | {"status": group.attrs["status"]}
    return found


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


def many_frames_input(folder, tarballs=6, copies=2):
    """INPUT_DIR of several tarballs holding the bundled frames under distinct names."""
    folder.mkdir()
    frames = [open(path, "rb").read() for path in bundled_frames()]
    for number in range(tarballs):
        members = [(f"t{number}/{copy:02d}_{i:02d}.jpg", frame) for copy in range(copies)
                   for i, frame in enumerate(frames)]
        pack_tarball(str(folder / f"set{number:02d}.tar"), members)
    return folder


def job_processes(root):
    """``{pid: rank or None}`` of a launcher and all its descendants (hydra's ranks run in their own sessions,
    so a process group does not reach them)."""
    parents, ranks = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as environ:
                found = [item for item in environ.read().split(b"\0") if item.startswith(b"PMI_RANK=")]
            ranks[int(entry)] = int(found[0].split(b"=")[1]) if found else None
        except (OSError, IndexError, ValueError):
            continue
    family = {root}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    return {pid: ranks.get(pid) for pid in family}


def kill_at(command, delay, whole_job, output_dir):
    """Start a run, and SIGKILL it (all of it, or rank 1) ``delay`` seconds after rank 0 took the lock."""
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lock = os.path.join(output_dir, LOCK)
    deadline = time.monotonic() + 60
    while not os.path.exists(lock) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    processes = job_processes(job.pid)
    for pid, rank in processes.items():
        if whole_job or rank == 1:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        job.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in job_processes(job.pid):
            os.kill(pid, signal.SIGKILL)
        pytest.fail("the job did not end within 30 s after one rank was killed")


# one-rank finds rank 1 by MPICH's PMI_RANK; whole-job works under any launcher
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
        kill_at(mpicolor_command(2, "run", input_dir, output_dir, *settings), delay, whole_job, output_dir)
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
        deadline = time.monotonic() + 60
        while not os.path.exists(output_dir / LOCK) and time.monotonic() < deadline:
            time.sleep(0.02)
        second = run_mpicolor(1, "run", input_dir, output_dir, "--simulate", "0.02")
        assert second.returncode == 3
        assert "in use by another mpicolor run (pid" in second.stderr
    finally:
        _, log = first.communicate(timeout=60)
    assert first.returncode == 0, log
