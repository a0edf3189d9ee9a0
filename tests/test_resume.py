"""What a rerun reuses, under real mpiexec: stored results only for the same tarball and settings, and a
damaged checkpoint never blocks a resume."""

import json
import os
import shutil

import pytest

from helpers import (TESTS, bundled_frames, checkpoint_datasets, make_partial, outputs, pack_tarball, read_checkpoint,
                     run_mpicolor)
from mpicolor.state.checkpoint import CHECKPOINT, CHECKPOINT_FOLDER, Checkpoint
from mpicolor.state.output_dir import RUN_SUMMARY

pytestmark = pytest.mark.mpi

SIMULATE = ["--simulate", "0", "--split", "1:0"]


def frames_computed(output_dir):
    with open(output_dir / RUN_SUMMARY) as summary:
        return json.load(summary)["frames"]


def test_a_tarball_rebuilt_under_the_same_name_is_computed_again(input_dir, tmp_path):
    output_dir = tmp_path / "out"
    assert run_mpicolor(2, "run", input_dir, output_dir).returncode == 0
    # car.tar rebuilt with other frames; its sqlite file removed, as the original's users do to redo a data set
    frames = [open(path, "rb").read() for path in bundled_frames() if "person" in path]
    pack_tarball(str(input_dir / "car.tar"), [(f"new/{n}.jpg", data) for n, data in enumerate(frames)])
    os.remove(output_dir / "hist_car.tar_db.sqlite")
    rerun = run_mpicolor(2, "run", input_dir, output_dir)
    assert rerun.returncode == 0, rerun.stderr
    assert "car.tar changed since its results were computed" in rerun.stderr
    clean = tmp_path / "clean"
    assert run_mpicolor(2, "run", input_dir, clean).returncode == 0
    assert outputs(output_dir) == outputs(clean)
    assert frames_computed(output_dir) == len(frames)


def test_partial_results_of_a_tarball_whose_bytes_changed_are_not_reused(tmp_path):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    members = [(f"f{n:03d}.jpg", b"frame %d" % n) for n in range(40)]
    pack_tarball(str(input_dir / "a.tar"), members)
    output_dir = tmp_path / "out"
    assert run_mpicolor(2, "run", input_dir, output_dir, *SIMULATE).returncode == 0
    make_partial(output_dir, "a.tar", list(range(0, 40, 2)))
    # same names and sizes, other bytes: only the modification time tells
    pack_tarball(str(input_dir / "a.tar"), [(name, data.replace(b"frame", b"FRAME")) for name, data in members])
    rerun = run_mpicolor(2, "run", input_dir, output_dir, *SIMULATE)
    assert rerun.returncode == 0, rerun.stderr
    assert "a.tar changed since its results were computed (another modification time)" in rerun.stderr
    assert frames_computed(output_dir) == 40
    clean = tmp_path / "clean"
    assert run_mpicolor(2, "run", input_dir, clean, *SIMULATE).returncode == 0
    assert outputs(output_dir) == outputs(clean)


def many_tarballs(folder, count=4, frames=30):
    folder.mkdir()
    for number in range(count):
        pack_tarball(str(folder / f"set{number}.tar"), [(f"{n:03d}.jpg", b"%d-%d" % (number, n))
                                                       for n in range(frames)])
    return folder


def test_a_damaged_index_or_tarball_file_never_blocks_a_resume(tmp_path):
    input_dir = many_tarballs(tmp_path / "input")
    output_dir = tmp_path / "out"
    assert run_mpicolor(2, "run", input_dir, output_dir, *SIMULATE).returncode == 0
    expected = (outputs(output_dir), checkpoint_datasets(output_dir))
    make_partial(output_dir, "set1.tar", list(range(10)))
    make_partial(output_dir, "set2.tar", list(range(5)))
    with open(output_dir / CHECKPOINT, "r+b") as index:
        index.write(b"garbage!" * 64)
    with open(output_dir / CHECKPOINT_FOLDER / "set2.tar.h5", "r+b") as damaged:
        damaged.write(b"garbage!" * 64)
    rerun = run_mpicolor(2, "run", input_dir, output_dir, *SIMULATE)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{CHECKPOINT} is missing or unreadable" in rerun.stderr
    assert "the checkpoint of set2.tar cannot be used" in rerun.stderr and "computing it again" in rerun.stderr
    assert frames_computed(output_dir) == 10 + 30  # set1's pending frames, and set2 from scratch
    assert (outputs(output_dir), checkpoint_datasets(output_dir)) == expected
    read_checkpoint(output_dir)


def test_complete_tarballs_with_their_sqlite_file_are_not_read_again(tmp_path):
    input_dir = many_tarballs(tmp_path / "input")
    output_dir = tmp_path / "out"
    assert run_mpicolor(2, "run", input_dir, output_dir, *SIMULATE).returncode == 0
    for name in os.listdir(output_dir / CHECKPOINT_FOLDER):
        with open(output_dir / CHECKPOINT_FOLDER / name, "r+b") as damaged:
            damaged.write(b"garbage!" * 64)
    rerun = run_mpicolor(2, "run", input_dir, output_dir, *SIMULATE)
    assert rerun.returncode == 0, rerun.stderr
    assert "4 already done, 0 to compute" in rerun.stderr and "cannot be used" not in rerun.stderr


def test_a_0_1_0_checkpoint_resumes(input_dir, tmp_path):
    # made by mpicolor 0.1.0 with --simulate 0 over these tarballs: bottle.tar complete, car.tar with frames 1
    # and 3 pending, person.tar not started, and gone.tar, which is no longer in INPUT_DIR
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    shutil.copy(os.path.join(TESTS, "data", "checkpoint-0.1.0.h5"), output_dir / CHECKPOINT)
    rerun = run_mpicolor(2, "run", input_dir, output_dir, "--simulate", "0", "--split", "1:0")
    assert rerun.returncode == 0, rerun.stderr
    assert "converted the checkpoint of mpicolor 0.1.0 (3 tarballs)" in rerun.stderr
    assert frames_computed(output_dir) == 2 + 4
    clean = tmp_path / "clean"
    assert run_mpicolor(2, "run", input_dir, clean, "--simulate", "0", "--split", "1:0").returncode == 0
    assert outputs(output_dir) == outputs(clean)
    _, tarballs = read_checkpoint(output_dir)
    assert all(tarballs[name].fingerprint is not None for name in ("bottle.tar", "car.tar", "person.tar"))


def test_data_moved_to_another_folder_resumes_and_input_dir_is_recorded(tmp_path):
    input_dir = many_tarballs(tmp_path / "input")
    output_dir = tmp_path / "out"
    assert run_mpicolor(2, "run", input_dir, output_dir, *SIMULATE).returncode == 0
    make_partial(output_dir, "set0.tar", [3, 4])
    moved = tmp_path / "moved"
    os.rename(input_dir, moved)
    rerun = run_mpicolor(2, "run", moved, output_dir, *SIMULATE)
    assert rerun.returncode == 0, rerun.stderr
    assert f"INPUT_DIR was {input_dir} and is now {moved}" in rerun.stderr
    assert frames_computed(output_dir) == 2
    assert Checkpoint(str(output_dir)).open() is not None
    checkpoint = Checkpoint(str(output_dir))
    checkpoint.open()
    assert checkpoint.input_dir == str(moved)
