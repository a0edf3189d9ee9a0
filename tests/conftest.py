"""Fixtures shared by the tests."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests import helpers.py and hostile.py

from helpers import CLIP_FRAMES, CLIP_RATE, make_clip, pack_scenes  # noqa: E402
from mpicolor.bench import run as bench_run  # noqa: E402

# CI's second MPI runs only the tests that start mpiexec (run/test.sh sets it): the rest do not use MPI at all
MPI_ONLY = "MPICOLOR_TESTS_MPI_ONLY"


def pytest_collection_modifyitems(config, items):
    if os.environ.get(MPI_ONLY):
        skipped = [item for item in items if item.get_closest_marker("mpi") is None]
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if item.get_closest_marker("mpi") is not None]


@pytest.fixture(autouse=True)
def mpiexec_only_in_mpi_tests(request, monkeypatch):
    """A test that starts mpiexec is marked ``mpi``, so that ``pytest -m "not mpi"`` is the in-process suite and
    the second MPI's pass misses none: an unmarked test that launches fails, saying so."""
    if request.node.get_closest_marker("mpi") is None:
        def unmarked():
            raise AssertionError(f"{request.node.nodeid} starts mpiexec: mark it @pytest.mark.mpi")
        monkeypatch.setattr(bench_run, "mpiexec_command", unmarked)


@pytest.fixture
def input_dir(tmp_path):
    """INPUT_DIR with three tarballs of real frames (bottle.tar, car.tar, person.tar)."""
    folder = tmp_path / "input"
    folder.mkdir()
    pack_scenes(str(folder))
    return folder


def _git_status():
    found = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], capture_output=True,
                           text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    return found.stdout if found.returncode == 0 else None


@pytest.fixture(autouse=True, scope="module")
def repository_untouched(request):
    """No test writes into the checkout: ``git status`` is the same after every test module as before it
    (checked per module, not per test: two ``git status`` a test cost more than most in-process tests)."""
    before = _git_status()
    yield
    assert _git_status() == before, f"a test of {request.module.__name__} changed files in the repository"


@pytest.fixture(scope="session")
def video_clips(tmp_path_factory):
    """Small real clips made once from the bundled frames, by name.

    ``h264`` (MP4, B-frames), ``vp9`` (WebM) and ``av1`` (Matroska, SVT-AV1), each 96 frames at 25 fps with a
    keyframe every 12; ``hevc`` (x265) and ``h264-open-gop``, whose frames shown before a keyframe are decoded
    after it and refer across it; ``one_keyframe`` (H.264, a single keyframe), ``vfr`` (H.264 at a variable frame rate),
    ``rotated`` (H.264 with a 90-degree display matrix), ``yuv444`` (H.264 4:4:4) and ``faststart`` (H.264
    MP4 with its index first, so that a copy cut short keeps it).
    """
    pytest.importorskip("av", reason="video input needs PyAV, the video extra")
    folder = tmp_path_factory.mktemp("clips")
    # a variable rate: frames 40 ms apart, then 120 ms apart, then 20 ms apart
    vfr_times = [0.04 * k for k in range(32)] + [1.28 + 0.12 * k for k in range(32)] + [5.12 + 0.02 * k for k in
                                                                                       range(32)]
    clips = {
        "h264": make_clip(folder / "h264.mp4", "h264"),
        "vp9": make_clip(folder / "vp9.webm", "vp9"),
        "av1": make_clip(folder / "av1.mkv", "av1"),
        "hevc": make_clip(folder / "hevc.mp4", "hevc"),
        "h264-open-gop": make_clip(folder / "h264-open-gop.mp4", "h264-open-gop"),
        "one_keyframe": make_clip(folder / "one_keyframe.mp4", "h264", keyframe_interval=1000),
        "vfr": make_clip(folder / "vfr.mp4", "h264", times=vfr_times),
        "rotated": make_clip(folder / "rotated.mp4", "h264", rotation=90, n_frames=24),
        "yuv444": make_clip(folder / "yuv444.mp4", "h264", pixel_format="yuv444p", n_frames=24),
        "faststart": make_clip(folder / "faststart.mp4", "h264", container_options={"movflags": "faststart"}),
    }
    assert CLIP_FRAMES == 96 and CLIP_RATE == 25 and len(vfr_times) == CLIP_FRAMES
    return clips
