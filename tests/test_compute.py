"""A rank's reading of frames, in process: bounded reads, transient errors tried again, tarballs that change.

Frames that cannot be read for a reason that is not theirs stay pending (``ChunkResult.unread``) so that the
next run reads them; frames that are bad in themselves stay failures. The reading function is injected into
:class:`~mpicolor.job.worker.FrameComputer`, so these faults need no broken file system.
"""

import errno
import os
import time

import numpy as np
import pytest

import hostile
from helpers import outputs, pack_scenes, pack_tarball, read_checkpoint
from mpicolor.job import worker
from mpicolor.job.protocol import Chunk
from mpicolor.job.worker import HEAD_BYTES, RETRY_DELAYS, FrameComputer, index_for_coordinator
from mpicolor.job.config import RunConfig
from mpicolor.job.coordinator import Coordinator, run_serial
from mpicolor.job.report import EXIT_OK, EXIT_TARBALL_FAILED, TarballOutcome
from mpicolor.engine.palette import palette_from_bytes
from mpicolor.state.results import CPU, FAILED, INCOMPLETE, PENDING

GIANT = 5 << 30


def config(tmp_path, output="out", **settings):
    return RunConfig(str(tmp_path / "input"), str(tmp_path / output), **settings)


def whole_chunk(path):
    """Every frame of the tarball at ``path`` as one chunk, stamped as the coordinator stamps it."""
    index = index_for_coordinator(0, str(path))
    return Chunk(0, 0, str(path), np.arange(len(index.names)), index.offsets, index.sizes, index.stamp)


class Reads:
    """``os.pread`` that records every read and raises ``errors`` (errno values) on the first calls."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.calls = []

    def __call__(self, fd, length, offset):
        self.calls.append((length, offset))
        if self.errors:
            number = self.errors.pop(0)
            raise OSError(number, os.strerror(number))
        return os.pread(fd, length, offset)


@pytest.fixture
def frames_tar(tmp_path):
    """A tarball of three real frames, and the frames' bytes."""
    folder = tmp_path / "input"
    folder.mkdir()
    frames = [hostile.good_jpeg(seed, 320, 240) for seed in range(3)]
    pack_tarball(str(folder / "frames.tar"), [(f"f{seed}.jpg", data) for seed, data in enumerate(frames)])
    return folder / "frames.tar", frames


def assert_computed(result, frames):
    assert result.failures == {} and result.unread == {}
    assert (result.backend == CPU).all()
    for row, frame_bytes in zip(result.packed, frames):
        assert row.tolist() == palette_from_bytes(frame_bytes).packed.tolist()


# --- 1: a member is checked from a bounded head before it is read ---------------------------------------------


def test_a_giant_member_is_refused_from_its_head_and_its_neighbours_computed(tmp_path):
    (tmp_path / "input").mkdir()
    path = tmp_path / "input" / "giant.tar"
    first, last = hostile.good_jpeg(1), hostile.good_jpeg(2)
    hostile.write_sparse_tar(path, [("first.jpg", first, len(first)), ("zeros.jpg", b"", GIANT),
                                    ("header.jpg", first[:600], GIANT), ("last.jpg", last, len(last))])
    reads = Reads()
    result = FrameComputer(config(tmp_path), read=reads).compute(whole_chunk(path))
    assert result.failures[1].startswith("not a JPEG or PNG image (5368709120 bytes starting b'\\x00")
    assert "JPEG of 64x48 pixels in 5,368,709,120 bytes: more than a frame of that size can hold" in result.failures[2]
    assert result.backend.tolist() == [CPU, FAILED, FAILED, CPU]
    assert result.packed[3].tolist() == palette_from_bytes(last).packed.tolist()
    # nothing but the heads of the giants was read
    assert sum(length for length, _ in reads.calls) == len(first) + 2 * HEAD_BYTES + len(last)


def test_a_frame_whose_header_lies_past_the_first_head_is_read_and_computed(tmp_path):
    (tmp_path / "input").mkdir()
    path = tmp_path / "input" / "metadata.tar"
    jpeg = hostile.good_jpeg(3)
    frame = jpeg[:2] + (b"\xff\xe1" + (60_002).to_bytes(2, "big") + bytes(60_000)) * 3 + jpeg[2:]
    pack_tarball(str(path), [("exif.jpg", frame)])
    reads = Reads()
    result = FrameComputer(config(tmp_path), read=reads).compute(whole_chunk(path))
    assert_computed(result, [frame])
    assert [length for length, _ in reads.calls] == [HEAD_BYTES, HEAD_BYTES, len(frame) - 2 * HEAD_BYTES]


# --- 3: transient errors are tried again; errors that persist leave the frames pending ------------------------


def test_eio_on_the_first_tries_is_tried_again_and_the_frames_computed(frames_tar, tmp_path):
    path, frames = frames_tar
    reads = Reads(errno.EIO, errno.EIO, errno.ESTALE)
    result = FrameComputer(config(tmp_path), read=reads).compute(whole_chunk(path))
    assert_computed(result, frames)
    assert len(reads.calls) == 3 + len(frames)


def test_eio_that_persists_leaves_the_chunk_pending_not_failed(frames_tar, tmp_path):
    path, frames = frames_tar
    reads = Reads(*[errno.EIO] * 100)
    started = time.monotonic()
    result = FrameComputer(config(tmp_path), read=reads).compute(whole_chunk(path))
    elapsed = time.monotonic() - started
    assert len(reads.calls) == len(RETRY_DELAYS) + 1  # one frame's tries: the rest of the chunk is not tried
    assert sum(RETRY_DELAYS) <= elapsed < sum(RETRY_DELAYS) + 0.5
    assert result.failures == {} and (result.backend == PENDING).all()
    reason = f"cannot read {path} (Input/output error, 5 tries in 0.9 s)"
    assert result.unread == {0: reason, 1: reason, 2: reason}


def test_an_error_that_cannot_pass_is_not_tried_again(frames_tar, tmp_path):
    path, _ = frames_tar
    reads = Reads(errno.EACCES)
    result = FrameComputer(config(tmp_path), read=reads).compute(whole_chunk(path))
    assert len(reads.calls) == 1
    assert result.unread[0] == f"cannot read {path} (Permission denied)" and result.failures == {}


def failing_index(monkeypatch, *errors):
    """Make the worker's ``index_tarball`` raise ``errors`` (errno values) on its first calls; return its calls."""
    calls, index_tarball = [], worker.index_tarball

    def index(path):
        calls.append(path)
        if len(calls) <= len(errors):
            raise OSError(errors[len(calls) - 1], os.strerror(errors[len(calls) - 1]))
        return index_tarball(path)

    monkeypatch.setattr(worker, "index_tarball", index)
    return calls


def test_indexing_tries_a_transient_error_again(frames_tar, monkeypatch):
    path, frames = frames_tar
    calls = failing_index(monkeypatch, errno.EIO, errno.ESTALE)
    indexed = index_for_coordinator(0, path)
    assert indexed.error is None and len(indexed.names) == len(frames) and len(calls) == 3


def test_indexing_that_keeps_failing_names_its_tries(frames_tar, monkeypatch):
    path, _ = frames_tar
    calls = failing_index(monkeypatch, *[errno.EIO] * 100)
    assert index_for_coordinator(0, path).error == "cannot read it (Input/output error, 5 tries in 0.9 s)"
    assert len(calls) == len(RETRY_DELAYS) + 1


def test_indexing_does_not_try_again_an_error_that_cannot_pass(frames_tar, monkeypatch):
    path, _ = frames_tar
    calls = failing_index(monkeypatch, errno.EACCES)
    assert index_for_coordinator(0, path).error == "cannot read it (Permission denied)" and len(calls) == 1


def test_a_frame_that_is_bad_in_itself_stays_a_failure_after_a_transient_error(tmp_path):
    (tmp_path / "input").mkdir()
    path = tmp_path / "input" / "bad.tar"
    pack_tarball(str(path), [("corrupt.jpg", hostile.corrupt_jpeg()), ("good.jpg", hostile.good_jpeg(4))])
    result = FrameComputer(config(tmp_path), read=Reads(errno.EIO)).compute(whole_chunk(path))
    assert result.unread == {} and result.backend.tolist() == [FAILED, CPU]
    assert "Corrupt JPEG data" in result.failures[0]


# --- 2: a tarball that changes while it is read ------------------------------------------------------------


def change(path, how):
    """Shrink, rewrite in place (same size), replace by rename, or remove the tarball at ``path``."""
    data = path.read_bytes()
    if how == "shrunk":
        os.truncate(path, len(data) // 2)
    elif how == "rewritten":
        time.sleep(0.01)  # a later modification time, however coarse the file system's clock
        path.write_bytes(data[:-2048] + bytes(2048))
    elif how == "replaced":
        other = path.with_suffix(".new")
        other.write_bytes(data)
        os.replace(other, path)
    else:
        path.unlink()


@pytest.mark.parametrize("how, reason", [
    ("shrunk", "changed size since it was indexed (30720 -> 15360 bytes)"),
    ("rewritten", "was modified since it was indexed"),
    ("replaced", "was replaced by another file since it was indexed"),
    ("removed", "(No such file or directory)"),
])
def test_a_tarball_changed_after_indexing_leaves_its_frames_pending(frames_tar, tmp_path, how, reason):
    path, _ = frames_tar
    chunk = whole_chunk(path)
    change(path, how)
    result = FrameComputer(config(tmp_path)).compute(chunk)
    assert result.failures == {} and (result.backend == PENDING).all()
    assert sorted(result.unread) == [0, 1, 2] and reason in result.unread[0], result.unread


def test_a_frame_cut_short_is_unread_and_so_is_the_rest_of_its_chunk(frames_tar, tmp_path):
    path, _ = frames_tar
    chunk = whole_chunk(path)
    chunk.stamp = None  # the read itself finds the cut
    os.truncate(path, chunk.offsets[1] + 10)
    result = FrameComputer(config(tmp_path)).compute(chunk)
    assert result.backend.tolist() == [CPU, PENDING, PENDING] and result.failures == {}
    cut = f"{path}: a frame is cut short: got 10 of {chunk.sizes[1]} bytes"
    assert sorted(result.unread) == [1, 2] and result.unread[1].startswith(cut) and result.unread[2] == result.unread[1]


def test_a_change_while_a_chunk_is_read_leaves_the_whole_chunk_pending(frames_tar, tmp_path):
    # the rank reads the first frames, then the tarball is rewritten: what was read may mix two versions
    path, _ = frames_tar
    computer = FrameComputer(config(tmp_path))
    steps = computer.steps(whole_chunk(path))
    next(steps)
    change(path, "rewritten")
    with pytest.raises(StopIteration) as finished:
        while True:
            next(steps)
    result = finished.value.value
    assert sorted(result.unread) == [0, 1, 2] and (result.backend == PENDING).all()


# --- the coordinator: the tarball ends incomplete, exit status 1, and the rerun completes it -----------------


def test_frames_left_unread_end_their_tarball_incomplete_and_the_rerun_completes_it(tmp_path, caplog):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    pack_scenes(str(input_dir))
    settings = config(tmp_path, checkpoint_every=600)
    car = str(input_dir / "car.tar")

    def eio_in_car(fd, length, offset):
        if os.readlink(f"/proc/self/fd/{fd}") == car:
            raise OSError(errno.EIO, "Input/output error")
        return os.pread(fd, length, offset)

    assert run_serial(settings, FrameComputer(settings, read=eio_in_car)) == EXIT_TARBALL_FAILED
    checkpoint = read_checkpoint(settings.output_dir)[1]
    assert checkpoint["car.tar"].status == INCOMPLETE and checkpoint["car.tar"].failures == {}
    assert (checkpoint["car.tar"].backend == PENDING).all()
    assert "Input/output error, 5 tries" in checkpoint["car.tar"].incomplete
    assert sorted(outputs(settings.output_dir)) == ["hist_bottle.tar_db.sqlite", "hist_person.tar_db.sqlite"]
    assert "car.tar: frame 'car/car_" in caplog.text and "ends incomplete" in caplog.text

    assert run_serial(settings) == EXIT_OK
    clean = config(tmp_path, "clean")
    assert run_serial(clean) == EXIT_OK
    assert outputs(settings.output_dir) == outputs(clean.output_dir)


def test_the_summary_names_the_incomplete_tarball_and_counts_only_frames_done(tmp_path):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    pack_scenes(str(input_dir))
    coordinator = Coordinator(config(tmp_path), size=1)
    coordinator.open_run()
    coordinator.start_clocks()
    computer = FrameComputer(coordinator.config)
    while not coordinator.all_computed:
        chunk = coordinator.next_chunk()
        if chunk is not None:
            result = computer.compute(chunk)
            if chunk.path.endswith("person.tar") and chunk.positions[0] >= 2:
                result.unread = dict.fromkeys(result.positions.tolist(), "an injected reason")
                result.backend[:] = PENDING
            coordinator.accept(result)
    assert coordinator.close_run() == EXIT_TARBALL_FAILED
    outcome = next(outcome for outcome in coordinator.outcomes.values() if outcome.name == "person.tar")
    assert outcome == TarballOutcome("person.tar", INCOMPLETE, 2, 0, "an injected reason")
    assert any("person.tar: incomplete, 2 frames, 0 failed (an injected reason)" in line
               for line in coordinator.report.lines(1.0))
