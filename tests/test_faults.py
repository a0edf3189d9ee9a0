"""Hostile input and faults under real mpiexec: every bad input gets a reason, nothing is lost, nothing hangs."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import hostile
from helpers import (bundled_frames, checkpoint_datasets, done_in_checkpoint, job_environment, kill_job,
                     many_frames_input, mpicolor_command, outputs, pack_scenes, pack_tarball, read_checkpoint,
                     read_sqlite, run_mpicolor)
from mpicolor.bench import run as bench_run
from mpicolor.bench.run import is_open_mpi
from mpicolor.engine.palette import palette_from_bytes
from mpicolor.state.checkpoint import CHECKPOINT
from mpicolor.job.report import EXIT_INTERRUPTED, EXIT_RANK_FAILED
from mpicolor.state.output_dir import RUN_LOG, RUN_SUMMARY
from mpicolor.state.results import FAILED, PENDING

pytestmark = pytest.mark.mpi

BAD_FRAMES = {"empty.jpg", "random.jpg", "truncated.jpg", "corrupt.jpg", "huge.jpg"}


def tree_state(root, skip=None):
    """Path -> content hash of every file below root (except below ``skip``), and the folders."""
    state = {}
    for folder, folders, files in os.walk(root):
        if skip and os.path.abspath(folder).startswith(os.path.abspath(skip)):
            continue
        state[os.path.relpath(folder, root) + "/"] = None
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as stream:
                state[os.path.relpath(path, root)] = hashlib.sha256(stream.read()).hexdigest()
    return state


def test_hostile_members_are_failures_or_frames_and_nothing_escapes(tmp_path):
    # everything five folders below tmp_path: a member name climbing four folders up from the working folder,
    # INPUT_DIR or OUTPUT_DIR (../../../../etc/cron.d/x.jpg) still points inside the tree watched below
    deep = tmp_path / "1" / "2" / "3" / "4" / "5"
    input_dir, output_dir, working = deep / "input", deep / "out", deep / "cwd"
    input_dir.mkdir(parents=True)
    working.mkdir()
    expected = hostile.hostile_member_tar(input_dir / "hostile.tar")
    pack_scenes(str(input_dir))
    targets = [os.path.normpath(os.path.join(base, name)) for base in (working, input_dir, output_dir)
               for name in ("../escape.jpg", "../../../../etc/cron.d/x.jpg")] + ["/abs/frame.jpg"]
    assert not any(os.path.exists(target) for target in targets)
    before = tree_state(tmp_path)
    finished = run_mpicolor(2, "run", input_dir, output_dir, cwd=working)
    assert finished.returncode == 0, finished.stderr
    tables = read_sqlite(output_dir / "hist_hostile.tar_db.sqlite")
    names = [frame["name"] for frame in expected["frames"]]
    failed = {row[0]: row[1] for row in tables["failures"]}
    assert set(failed) == BAD_FRAMES
    assert all(reason for reason in failed.values())
    assert "30000" in failed["huge.jpg"]
    # every other frame is decoded (grayscale, CMYK, PNG named .jpg, 16-bit PNG) and stored under its exact name
    assert [row[0] for row in tables["images"]] == [name for name in names if name not in BAD_FRAMES]
    members = [row[-1] for row in tables["images"] if row[0] == "dup.jpg"]
    assert len(members) == 2 and members[0] != members[1]  # duplicates kept, told apart by member
    info = dict(tables["info"])
    assert json.loads(info["skipped"]) == expected["skipped_counts"]
    # nothing written outside OUTPUT_DIR (a member named ../escape.jpg is a label, never a path)
    assert all(target.startswith(str(tmp_path)) for target in targets[:-1])
    assert tree_state(tmp_path, skip=output_dir) == before
    assert not any(os.path.exists(target) for target in targets)
    # library noise stays out of the log: libjpeg's warnings became the frames' reasons, shown in log lines
    raw = [line for line in finished.stderr.splitlines() if "[rank " not in line and "JPEG" in line]
    assert raw == []
    assert "Corrupt JPEG data: 35 extraneous bytes before marker 0xd9" in failed["corrupt.jpg"]


def test_bad_tarballs_are_named_and_the_others_complete(tmp_path):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    pack_scenes(str(input_dir))
    hostile.write_not_a_tar(input_dir / "notatar.tar")
    truncated = hostile.write_truncated_tar(input_dir / "truncated.tar")
    hostile.write_empty_tar(input_dir / "empty.tar")
    hostile.write_gzipped_tar(input_dir / "zipped.tar.gz")
    hostile.write_gzipped_tar(input_dir / "disguised.tar")
    (input_dir / "folder.tar").mkdir()
    input_before = tree_state(input_dir)
    output_dir = tmp_path / "out"
    finished = run_mpicolor(2, "run", input_dir, output_dir)
    assert finished.returncode == 1, finished.stderr
    log = finished.stderr
    for name, words in {"notatar.tar": "not a tar", "truncated.tar": "truncated", "zipped.tar.gz": "gzip",
                        "disguised.tar": "gzip", "folder.tar": "is a directory"}.items():
        lines = [line for line in log.splitlines() if name in line and words in line]
        assert lines, f"{name}: no log line saying {words!r}"
    summary = log[log.index("done:"):]
    for name in ("notatar.tar", "truncated.tar", "zipped.tar.gz", "disguised.tar", "folder.tar", "empty.tar"):
        assert name in summary
    produced = sorted(os.listdir(output_dir))
    for good in ("bottle", "car", "person", "empty"):
        assert f"hist_{good}.tar_db.sqlite" in produced
    assert "hist_truncated.tar_db.sqlite" not in produced  # cut short: kept, but not taken as done
    kept = checkpoint_datasets(output_dir)["truncated.tar"]
    assert kept["status"] == "incomplete" and kept["frames"] == [name.encode() for name, _ in truncated["kept"]]
    assert tree_state(input_dir) == input_before
    again = run_mpicolor(2, "run", input_dir, output_dir)
    assert again.returncode == 1 and "4 already done" in again.stderr


def test_missing_and_empty_input_dir(tmp_path):
    missing = run_mpicolor(1, "run", tmp_path / "nowhere", tmp_path / "out")
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run_mpicolor(2, "run", tmp_path / "empty", tmp_path / "out")
    assert empty.returncode == 0 and "holds no tarballs" in empty.stderr


def mount_tmpfs(path, options):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}): needs root")


@pytest.fixture
def mounts():
    made = []
    yield made
    for path in made:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_output_dir_not_writable(tmp_path, input_dir, mounts):
    read_only = tmp_path / "ro"
    mount_tmpfs(read_only, "ro,size=1m")
    mounts.append(read_only)
    finished = run_mpicolor(2, "run", input_dir, read_only)
    assert finished.returncode == 3
    assert "not writable" in finished.stderr and str(read_only) in finished.stderr
    inside = run_mpicolor(1, "run", input_dir, read_only / "sub")
    assert inside.returncode == 3 and "cannot be created" in inside.stderr


def test_full_disk_stops_clearly_and_keeps_a_readable_checkpoint(tmp_path, mounts):
    input_dir = many_frames_input(tmp_path / "input", tarballs=30, copies=4)
    small = tmp_path / "small"
    mount_tmpfs(small, "size=1600k")
    mounts.append(small)
    finished = run_mpicolor(2, "run", input_dir, small, "--simulate", "0", "--checkpoint-every", "0.01")
    assert finished.returncode == 3, finished.stderr
    assert "No space left on device" in finished.stderr and "run the same command again" in finished.stderr
    settings, tarballs = read_checkpoint(small)
    assert tarballs, "the run should stop part way, with a checkpoint of what it did"
    # with room again, the same command resumes and completes
    subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
    resumed = run_mpicolor(2, "run", input_dir, small, "--simulate", "0", "--checkpoint-every", "0.01")
    assert resumed.returncode == 0, resumed.stderr
    assert len([name for name in os.listdir(small) if name.endswith(".sqlite")]) == 30


def test_exception_on_one_rank_ends_the_job_within_seconds(tmp_path):
    input_dir = many_frames_input(tmp_path / "input")
    settings = ["--simulate", "0.01", "--checkpoint-every", "0.05"]
    fault_time = tmp_path / "fault-time"
    environment = job_environment(tmp_path / "ranks", inject=(
        "if rank == 1:\n"
        "    import time\n"
        "    from mpicolor.job import worker\n"
        "    def broken(self, chunk):\n"
        f"        open({str(fault_time)!r}, 'w').write(repr(time.time()))\n"
        "        raise RuntimeError('injected fault in a worker')\n"
        "    worker.FrameComputer.compute = broken\n"))
    failed = run_mpicolor(3, "run", input_dir, tmp_path / "out", *settings, timeout=60, env=environment)
    # from the fault, not from the launch: start-up is not what this measures
    assert time.time() - float(fault_time.read_text()) < 5
    assert failed.returncode == EXIT_RANK_FAILED, failed.stderr
    assert "rank 1" in failed.stderr and "injected fault in a worker" in failed.stderr
    reference = tmp_path / "reference"
    assert run_mpicolor(2, "run", input_dir, reference, *settings).returncode == 0
    resumed = run_mpicolor(2, "run", input_dir, tmp_path / "out", *settings)
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(tmp_path / "out") == outputs(reference)


@pytest.mark.parametrize("signal_number", [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT],
                         ids=["SIGUSR1", "SIGTERM", "SIGINT"])
def test_an_interrupting_signal_checkpoints_and_says_how_to_resume(tmp_path, signal_number):
    input_dir = many_frames_input(tmp_path / "input")
    settings = ["--simulate", "0.02", "--checkpoint-every", "600"]
    reference = tmp_path / "reference"
    assert run_mpicolor(2, "run", input_dir, reference, *settings).returncode == 0
    output_dir = tmp_path / "out"
    job = subprocess.Popen(mpicolor_command(2, "run", input_dir, output_dir, *settings), stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(output_dir / CHECKPOINT) and time.monotonic() < deadline:
        time.sleep(0.02)  # the first tarball is done
    job.send_signal(signal_number)
    signalled = time.monotonic()
    try:
        _, stderr = job.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        kill_job(job)
        pytest.fail(f"the job did not end within 20 s of {signal_number.name}")
    assert time.monotonic() - signalled < 5
    run_log = (output_dir / RUN_LOG).read_text()
    if signal_number != signal.SIGUSR1 and is_open_mpi(bench_run.mpiexec_path()):
        # Open MPI's mpiexec passes SIGTERM to the ranks (for SIGINT too), kills them 0.25 s later and passes on
        # none of their output meanwhile: the run log holds the last lines, and the status is Open MPI's
        assert "interrupted by SIGTERM" in run_log
    else:
        assert job.returncode == EXIT_INTERRUPTED, stderr
        assert f"interrupted by {signal_number.name}" in stderr and "run the same command again" in stderr
        assert f"interrupted by {signal_number.name}" in run_log
    assert "checkpoint written in" in run_log and "run the same command again to resume" in run_log
    _, tarballs = read_checkpoint(output_dir)
    done_before = sum(int((t.backend != PENDING).sum()) for t in tarballs.values())
    assert done_before > 0
    resumed = run_mpicolor(2, "run", input_dir, output_dir, *settings)
    assert resumed.returncode == 0, resumed.stderr
    with open(output_dir / RUN_SUMMARY) as summary:
        assert json.load(summary)["frames"] == 6 * 24 - done_before  # nothing computed twice
    assert outputs(output_dir) == outputs(reference)


# Peak resident memory of every process below a launcher: the kernel folds a reaped child's peak (and that of
# its own reaped children) into its parent's RUSAGE_CHILDREN, and mpiexec reaps its proxies, which reap the
# ranks. So a wrapper around mpiexec learns the largest peak of the whole job when it ends, with no sampling
# that a short spike could slip between.
PEAK_OF_CHILDREN = (
    "import resource, subprocess, sys\n"
    "finished = subprocess.run(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"  # KiB on Linux
    "sys.exit(finished.returncode)\n")


def test_a_member_declaring_5_gib_is_a_failure_and_no_process_grows_with_it(tmp_path):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    before, header, after = (open(path, "rb").read() for path in bundled_frames()[:3])
    giant = 5 << 30
    hostile.write_sparse_tar(input_dir / "giant.tar", [
        ("before.jpg", before, len(before)),
        ("zeros.jpg", b"", giant),  # not an image
        ("header.jpg", header[:2000], giant),  # a real 640x360 JPEG header, then zeros
        ("after.jpg", after, len(after))])
    assert os.stat(input_dir / "giant.tar").st_blocks * 512 < 1 << 20  # sparse: it costs no disk
    output_dir = tmp_path / "out"
    finished = subprocess.run([sys.executable, "-c", PEAK_OF_CHILDREN,
                               *mpicolor_command(2, "run", input_dir, output_dir)],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    peak = int(finished.stdout.split()[-1]) * 1024
    assert peak < 2 << 30, f"a process of the job reached {peak / 2**30:.1f} GiB"
    tables = read_sqlite(output_dir / "hist_giant.tar_db.sqlite")
    failed = dict(row[:2] for row in tables["failures"])
    assert sorted(failed) == ["header.jpg", "zeros.jpg"]
    assert failed["zeros.jpg"].startswith("not a JPEG or PNG image (5368709120 bytes starting b'\\x00")
    assert failed["header.jpg"].startswith("JPEG of 640x360 pixels in 5,368,709,120 bytes: more than a frame of "
                                           "that size can hold")
    computed = {row[0]: list(row[1:6]) for row in tables["images"]}
    assert computed == {"before.jpg": palette_from_bytes(before).packed.tolist(),
                        "after.jpg": palette_from_bytes(after).packed.tolist()}


def test_a_tarball_cut_while_it_is_read_ends_that_tarball_and_the_rerun_completes_it(tmp_path):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    frames = [open(path, "rb").read() for path in bundled_frames()]
    cut = input_dir / "cut.tar"  # 240 frames at 20 ms on 2 ranks: 2.4 s of reading
    pack_tarball(str(cut), [(f"cut/{copy:02d}_{i:02d}.jpg", frame) for copy in range(20)
                            for i, frame in enumerate(frames)])
    pack_scenes(str(input_dir))
    original, packed = cut.read_bytes(), os.stat(cut)
    settings = ["--simulate", "0.02", "--checkpoint-every", "0.1"]
    reference = tmp_path / "reference"
    assert run_mpicolor(2, "run", input_dir, reference, *settings).returncode == 0
    output_dir = tmp_path / "out"
    job = subprocess.Popen(mpicolor_command(2, "run", input_dir, output_dir, *settings), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while done_in_checkpoint(output_dir, "cut.tar") < 24 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.truncate(cut, len(original) // 2)
    try:
        _, log = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_job(job)
        pytest.fail("the job did not end after its tarball was cut")
    assert job.returncode == 1, log
    assert "Traceback" not in log
    assert "cut.tar: frame 'cut/" in log and "ends incomplete" in log
    summary = log[log.index("done:"):]
    assert "cut.tar: incomplete" in summary and "changed size since it was indexed" in summary
    kept = checkpoint_datasets(output_dir)["cut.tar"]
    assert kept["status"] == "incomplete"
    pending = kept["backend"].count(PENDING)
    assert 0 < pending <= 240 - 24, "the cut lands while the tarball is read"
    assert FAILED not in kept["backend"]  # frames that could not be read are not failed frames
    assert "hist_cut.tar_db.sqlite" not in os.listdir(output_dir)
    cut.write_bytes(original)
    os.utime(cut, ns=(packed.st_atime_ns, packed.st_mtime_ns))  # restored as `cp -p` does: the same tarball again
    rerun = run_mpicolor(2, "run", input_dir, output_dir, *settings)
    assert rerun.returncode == 0, rerun.stderr
    assert outputs(output_dir) == outputs(reference)
    assert checkpoint_datasets(output_dir) == checkpoint_datasets(reference)
    with open(output_dir / RUN_SUMMARY) as summary_file:
        assert json.load(summary_file)["frames"] == pending  # the rerun reads only what was left
