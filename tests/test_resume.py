"""What a rerun reuses: stored results only for the same tarball and settings, and a damaged checkpoint never
blocks a resume. In process (``run_serial`` drives the coordinator that ``mpiexec`` runs on rank 0): what a
rerun reuses is decided on rank 0 alone, and test_faults resumes under mpiexec."""

import json
import logging
import os
import shutil

from helpers import (
    TESTS,
    bundled_frames,
    checkpoint_datasets,
    command_line_config,
    make_partial,
    outputs,
    pack_tarball,
    read_checkpoint,
    tiny_tarballs,
)
from mpicolor.job.coordinator import run_serial
from mpicolor.job.exits import EXIT_OK
from mpicolor.state.checkpoint import CHECKPOINT, CHECKPOINT_FOLDER, Checkpoint
from mpicolor.state.output_dir import RUN_SUMMARY

SIMULATE = ["--simulate", "0", "--split", "1:0"]


def frames_computed(output_dir):
    with open(output_dir / RUN_SUMMARY) as summary:
        return json.load(summary)["frames"]


def rerun(config, caplog):
    """Run ``config`` again in process; its exit status and what it logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status = run_serial(config)
    return status, caplog.text


def test_a_tarball_rebuilt_under_the_same_name_is_computed_again(input_dir, tmp_path, caplog):
    settings = command_line_config(input_dir, tmp_path / "out")
    output_dir = tmp_path / "out"
    assert run_serial(settings) == EXIT_OK
    # car.tar rebuilt with other frames; its sqlite file removed, as the original's users do to redo a data set
    frames = [open(path, "rb").read() for path in bundled_frames() if "person" in path]
    pack_tarball(str(input_dir / "car.tar"), [(f"new/{n}.jpg", data) for n, data in enumerate(frames)])
    os.remove(output_dir / "hist_car.tar_db.sqlite")
    status, log = rerun(settings, caplog)
    assert status == EXIT_OK, log
    assert "car.tar changed since its results were computed" in log
    clean = command_line_config(input_dir, tmp_path / "clean")
    assert run_serial(clean) == EXIT_OK
    assert outputs(output_dir) == outputs(clean.output_dir)
    assert frames_computed(output_dir) == len(frames)


def test_partial_results_of_a_tarball_whose_bytes_changed_are_not_reused(tmp_path, caplog):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    members = [(f"f{n:03d}.jpg", b"frame %d" % n) for n in range(40)]
    pack_tarball(str(input_dir / "a.tar"), members)
    settings = command_line_config(input_dir, tmp_path / "out", *SIMULATE)
    output_dir = tmp_path / "out"
    assert run_serial(settings) == EXIT_OK
    make_partial(output_dir, "a.tar", list(range(0, 40, 2)))
    # same names and sizes, other bytes: only the modification time tells
    pack_tarball(str(input_dir / "a.tar"), [(name, data.replace(b"frame", b"FRAME")) for name, data in members])
    status, log = rerun(settings, caplog)
    assert status == EXIT_OK, log
    assert "a.tar changed since its results were computed (another modification time)" in log
    assert frames_computed(output_dir) == 40
    clean = command_line_config(input_dir, tmp_path / "clean", *SIMULATE)
    assert run_serial(clean) == EXIT_OK
    assert outputs(output_dir) == outputs(clean.output_dir)


def test_a_damaged_index_or_tarball_file_never_blocks_a_resume(tmp_path, caplog):
    settings = command_line_config(tiny_tarballs(tmp_path / "input", 4, 30), tmp_path / "out", *SIMULATE)
    output_dir = tmp_path / "out"
    assert run_serial(settings) == EXIT_OK
    expected = (outputs(output_dir), checkpoint_datasets(output_dir))
    make_partial(output_dir, "set1.tar", list(range(10)))
    make_partial(output_dir, "set2.tar", list(range(5)))
    with open(output_dir / CHECKPOINT, "r+b") as index:
        index.write(b"garbage!" * 64)
    with open(output_dir / CHECKPOINT_FOLDER / "set2.tar.h5", "r+b") as damaged:
        damaged.write(b"garbage!" * 64)
    status, log = rerun(settings, caplog)
    assert status == EXIT_OK, log
    assert f"{CHECKPOINT} is missing or unreadable" in log
    assert "the checkpoint of set2.tar cannot be used" in log and "computing it again" in log
    assert frames_computed(output_dir) == 10 + 30  # set1's pending frames, and set2 from scratch
    assert (outputs(output_dir), checkpoint_datasets(output_dir)) == expected
    read_checkpoint(output_dir)


def test_complete_tarballs_with_their_sqlite_file_are_not_read_again(tmp_path, caplog):
    settings = command_line_config(tiny_tarballs(tmp_path / "input", 4, 30), tmp_path / "out", *SIMULATE)
    output_dir = tmp_path / "out"
    assert run_serial(settings) == EXIT_OK
    for name in os.listdir(output_dir / CHECKPOINT_FOLDER):
        with open(output_dir / CHECKPOINT_FOLDER / name, "r+b") as damaged:
            damaged.write(b"garbage!" * 64)
    status, log = rerun(settings, caplog)
    assert status == EXIT_OK, log
    assert "4 already done, 0 to compute" in log and "cannot be used" not in log


def test_a_0_1_0_checkpoint_resumes(input_dir, tmp_path, caplog):
    # made by mpicolor 0.1.0 with --simulate 0 over these tarballs: bottle.tar complete, car.tar with frames 1
    # and 3 pending, person.tar not started, and gone.tar, which is no longer in INPUT_DIR
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    shutil.copy(os.path.join(TESTS, "data", "checkpoint-0.1.0.h5"), output_dir / CHECKPOINT)
    status, log = rerun(command_line_config(input_dir, tmp_path / "out", *SIMULATE), caplog)
    assert status == EXIT_OK, log
    assert "converted the checkpoint of mpicolor 0.1.0 (3 tarballs)" in log
    assert frames_computed(output_dir) == 2 + 4
    clean = command_line_config(input_dir, tmp_path / "clean", *SIMULATE)
    assert run_serial(clean) == EXIT_OK
    assert outputs(output_dir) == outputs(clean.output_dir)
    _, tarballs = read_checkpoint(output_dir)
    assert all(tarballs[name].fingerprint is not None for name in ("bottle.tar", "car.tar", "person.tar"))


def test_data_moved_to_another_folder_resumes_and_input_dir_is_recorded(tmp_path, caplog):
    input_dir = tiny_tarballs(tmp_path / "input", 4, 30)
    output_dir = tmp_path / "out"
    assert run_serial(command_line_config(input_dir, tmp_path / "out", *SIMULATE)) == EXIT_OK
    make_partial(output_dir, "set0.tar", [3, 4])
    moved = tmp_path / "moved"
    os.rename(input_dir, moved)
    status, log = rerun(command_line_config(moved, tmp_path / "out", *SIMULATE), caplog)
    assert status == EXIT_OK, log
    assert f"INPUT_DIR was {input_dir} and is now {moved}" in log
    assert frames_computed(output_dir) == 2
    checkpoint = Checkpoint(str(output_dir))
    checkpoint.open()
    assert checkpoint.input_dir == str(moved)
