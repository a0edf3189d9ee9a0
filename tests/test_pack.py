"""`mpicolor pack`: videos to tarballs of JPEG frames in time order, streaming, atomic, parallel under mpiexec."""

import argparse
import os
import subprocess
import sys
import tarfile

import cv2
import numpy as np
import pytest

from mpicolor.bench import run as bench_run
from mpicolor.tools import pack

# the tiny test video: solid frames of distinct colours, 10 frames per second
TINY_FPS, TINY_FRAMES, TINY_SIZE = 10, 25, (64, 48)


def command(module, *argv):
    """Run ``mpicolor <module> argv...`` in this process, through the module's own argparse flags."""
    parser = argparse.ArgumentParser(prog=f"mpicolor {module.__name__.rsplit('.', 1)[-1]}")
    module.add_arguments(parser)
    return module.main(parser.parse_args([str(arg) for arg in argv]))


def tiny_colours(n_frames=TINY_FRAMES):
    """RGB of each frame of the tiny video, far enough apart that JPEG cannot blur one into another.

    Returns
    -------
    ndarray of shape (n_frames, 3), uint8
    """
    index = np.arange(n_frames)
    return np.stack([index * 10, 250 - index * 10, (index * 97) % 256], axis=1).astype(np.uint8)


def make_video(path, n_frames=TINY_FRAMES):
    """A Motion-JPEG AVI of solid frames in :func:`tiny_colours`, made with OpenCV's VideoWriter."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), TINY_FPS, TINY_SIZE)
    assert writer.isOpened(), "OpenCV cannot write MJPG AVI here"
    for red, green, blue in tiny_colours(n_frames).tolist():
        writer.write(np.full((TINY_SIZE[1], TINY_SIZE[0], 3), (blue, green, red), np.uint8))
    writer.release()
    return str(path)


def members(tar_path):
    """``[(name, RGB mean of the decoded JPEG)]`` of a tarball, in tar order."""
    found = []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            image = cv2.imdecode(np.frombuffer(tar.extractfile(member).read(), np.uint8), cv2.IMREAD_COLOR)
            found.append((member.name, image.reshape(-1, 3).mean(axis=0)[::-1]))
    return found


def test_frames_are_named_in_time_order_in_parts_of_at_most_n(tmp_path):
    video = make_video(tmp_path / "tiny.avi")
    out = tmp_path / "tars"
    assert command(pack, video, "--out", out, "--frames-per-tar", 10) == 0
    assert sorted(os.listdir(out)) == ["tiny-0000.tar", "tiny-0001.tar", "tiny-0002.tar"]
    found = [item for part in sorted(os.listdir(out)) for item in members(out / part)]
    assert [name for name, _ in found] == [f"tiny/{index:06d}.jpg" for index in range(TINY_FRAMES)]
    for (name, mean), colour in zip(found, tiny_colours()):
        np.testing.assert_allclose(mean, colour, atol=6, err_msg=name)


def test_fps_samples_by_timestamp(tmp_path):
    video = make_video(tmp_path / "tiny.avi")
    out = tmp_path / "tars"
    assert command(pack, video, "--out", out, "--fps", 2) == 0
    found = members(out / "tiny-0000.tar")
    # 2.5 s of video at 10 fps sampled at 2 per second: the frames at 0, 0.5, 1, 1.5 and 2 s
    assert [name for name, _ in found] == [f"tiny/{index:06d}.jpg" for index in range(5)]
    for (_, mean), colour in zip(found, tiny_colours()[::5]):
        np.testing.assert_allclose(mean, colour, atol=6)


def test_a_bad_video_is_named_and_the_others_are_packed(tmp_path, capsys):
    good = make_video(tmp_path / "good.avi")
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "tars"
    assert command(pack, bad, good, missing, "--out", out) == 1
    assert os.listdir(out) == ["good-0000.tar"]
    errors = capsys.readouterr().err
    assert f"failed: {bad}" in errors and f"failed: {missing}" in errors and "cannot be opened" in errors


@pytest.mark.parametrize("flags, message", [
    (["--frames-per-tar", "0"], "--frames-per-tar 0 should be >= 1"),
    (["--fps", "0"], "--fps 0.0 should be > 0"),
    (["--quality", "101"], "--quality 101 should be between 1 and 100"),
])
def test_bad_settings_are_refused(tmp_path, capsys, flags, message):
    video = make_video(tmp_path / "tiny.avi")
    assert command(pack, video, "--out", tmp_path / "tars", *flags) == 2
    assert message in capsys.readouterr().err


def test_videos_whose_tarballs_would_collide_are_refused(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = make_video(tmp_path / "a" / "clip.avi"), make_video(tmp_path / "b" / "clip.avi")
    assert command(pack, first, second, "--out", tmp_path / "tars") == 2
    assert "share the name 'clip'" in capsys.readouterr().err


def test_existing_tarballs_are_kept_unless_overwrite(tmp_path, capsys):
    video = make_video(tmp_path / "tiny.avi")
    out = tmp_path / "tars"
    assert command(pack, video, "--out", out, "--frames-per-tar", 10) == 0
    assert command(pack, video, "--out", out, "--frames-per-tar", 10) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert command(pack, video, "--out", out, "--frames-per-tar", 20, "--overwrite") == 0
    assert sorted(os.listdir(out)) == ["tiny-0000.tar", "tiny-0001.tar"]


def test_an_interrupted_pack_leaves_complete_tarballs_only(tmp_path, monkeypatch):
    video = make_video(tmp_path / "tiny.avi")
    out = tmp_path / "tars"
    out.mkdir()
    encode = cv2.imencode
    calls = []

    def interrupted_after_15(*args):
        calls.append(1)
        if len(calls) > 15:
            raise KeyboardInterrupt
        return encode(*args)

    monkeypatch.setattr(pack.cv2, "imencode", interrupted_after_15)
    with pytest.raises(KeyboardInterrupt):
        pack.pack_video(video, str(out), "tiny", frames_per_tar=10)
    assert os.listdir(out) == ["tiny-0000.tar"]
    assert len(members(out / "tiny-0000.tar")) == 10


@pytest.mark.mpi
def test_videos_are_shared_among_ranks_under_mpiexec(tmp_path):
    videos = [make_video(tmp_path / f"clip{number}.avi", n_frames=5) for number in range(3)]
    out = tmp_path / "tars"
    script = ("import argparse, sys; from mpicolor.tools import pack; parser = argparse.ArgumentParser(); "
              "pack.add_arguments(parser); sys.exit(pack.main(parser.parse_args(sys.argv[1:])))")
    launch = [*bench_run.mpiexec_command(), "-n", "2", sys.executable, "-c", script, *videos, "--out", str(out)]
    finished = subprocess.run(launch, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert sorted(os.listdir(out)) == ["clip0-0000.tar", "clip1-0000.tar", "clip2-0000.tar"]
    assert "[rank 1] INFO clip1: 5 frames packed" in finished.stderr
    assert "packed 3 of 3 videos, 15 frames" in finished.stderr


def test_a_truncated_video_is_packed_as_far_as_it_decodes_with_a_warning(tmp_path, capsys):
    with open(make_video(tmp_path / "whole.avi"), "rb") as stream:
        whole = stream.read()
    (tmp_path / "cut.avi").write_bytes(whole[:len(whole) // 2])
    assert command(pack, tmp_path / "cut.avi", "--out", tmp_path / "tars") == 0
    assert 0 < len(members(tmp_path / "tars" / "cut-0000.tar")) < TINY_FRAMES
    assert f"of the {TINY_FRAMES} frames the container announces" in capsys.readouterr().err
