"""`mpicolor run` on videos: the same run as on tarballs (indexing, chunks of whole segments, checkpoint and
resume, the node tier, the tools), its outputs, and every bad input named while the other data sets complete.

In process (`run_serial`, `run_in_process`); the tests that start mpiexec are marked mpi.
"""

import argparse
import os
import pathlib
import shutil
import sqlite3
import subprocess
import tarfile
import time

import numpy as np
import pytest

from helpers import (
    CLIP_FRAMES,
    checkpoint_datasets,
    damage_packets,
    kill_job,
    make_partial,
    mpicolor_command,
    outputs,
    pack_scenes,
    run_mpicolor,
    wait_for_lock,
    write_audio_only,
    write_unknown_codec,
)
from mpicolor.engine import yuv
from mpicolor.engine.palette import extract_palette
from mpicolor.job.config import RunConfig
from mpicolor.job.coordinator import Coordinator, run_serial
from mpicolor.job.exits import EXIT_INPUT_FAILED
from mpicolor.job.inprocess import run_in_process
from mpicolor.job.protocol import Chunk
from mpicolor.state.output_dir import OutputError
from mpicolor.tools import export, inspect, render
from mpicolor.tools.pack import pack_video

av = pytest.importorskip("av", reason="video input needs PyAV, the video extra")
from mpicolor.state import videos  # noqa: E402
from mpicolor.state.videos import DecodedFrame  # noqa: E402


def video_input(folder, video_clips, names):
    """INPUT_DIR holding copies of the named test clips."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(video_clips[name], folder / os.path.basename(video_clips[name]))
    return folder


def run(input_dir, output_dir, size=1, **settings):
    """Run in process on ``size`` ranks (4 ranks: two nodes of 2); return the exit status."""
    config = RunConfig(str(input_dir), str(output_dir), progress="log", **settings)
    if size == 1:
        return run_serial(config)
    return run_in_process(config, size)


def images(output_dir, name):
    return outputs(output_dir)[f"hist_{name}_db.sqlite"]["images"]


def test_a_video_is_a_data_set_with_the_originals_table_and_its_times(video_clips, tmp_path):
    input_dir = video_input(tmp_path / "in", video_clips, ["h264", "av1", "vfr"])
    pack_scenes(str(input_dir))
    assert run(input_dir, tmp_path / "out") == 0
    tables = outputs(tmp_path / "out")
    assert sorted(tables) == ["hist_av1.mkv_db.sqlite", "hist_bottle.tar_db.sqlite", "hist_car.tar_db.sqlite",
                              "hist_h264.mp4_db.sqlite", "hist_person.tar_db.sqlite", "hist_vfr.mp4_db.sqlite"]
    connection = sqlite3.connect(tmp_path / "out" / "hist_h264.mp4_db.sqlite")
    columns = [row[1] for row in connection.execute("PRAGMA table_info(images)")]
    connection.close()
    assert columns == ["imgname", *(f"color{k}" for k in range(5)), *(f"share{k}" for k in range(5)), "member",
                       "seconds"]
    for name in ("h264", "vfr"):
        index = videos.index_video(video_clips[name])
        rows = tables[f"hist_{name}.mp4_db.sqlite"]["images"]
        assert [row[0] for row in rows] == [videos.frame_name(name, k) for k in range(CLIP_FRAMES)]
        assert [row[11] for row in rows] == list(range(CLIP_FRAMES))
        assert [row[12] for row in rows] == index.seconds.tolist()  # a variable rate's times as they are
    # a tarball's table is the original's, unchanged
    assert "seconds" not in str(tables["hist_car.tar_db.sqlite"]["info"])


@pytest.mark.parametrize("name", ["h264", "av1", "rotated", "yuv444"])
def test_palettes_are_those_of_the_decoded_frames_converted(video_clips, tmp_path, name):
    """Bit-identical to `extract_palette` of every frame decoded in one pass and converted whole: by the
    kernel (4:2:0, whose grid the run converts alone) or by FFmpeg (4:4:4). A rotated video's frames are
    upright."""
    input_dir = video_input(tmp_path / "in", video_clips, [name])
    assert run(input_dir, tmp_path / "out") == 0
    rows = images(tmp_path / "out", os.path.basename(video_clips[name]))
    index = videos.index_video(video_clips[name])
    frames = list(videos.read_segment(index.segment(0, index.n_frames)))
    assert len(rows) == len(frames) == index.n_frames
    for row, frame in zip(rows, sorted(frames, key=lambda frame: frame.number)):
        assert isinstance(frame, DecodedFrame)
        image = yuv.to_bgr(frame.pixel_format, frame.planes, frame.colorspace, frame.full_range, frame.rotation)
        if name == "yuv444":
            np.testing.assert_array_equal(image, frame.ffmpeg_bgr())
        if name == "rotated":
            assert image.shape[:2] == (256, 144)
        palette = extract_palette(image)
        assert list(row[1:6]) == palette.packed.tolist()
        np.testing.assert_array_equal(np.float32(row[6:11]), np.float32(palette.shares))


def test_results_do_not_depend_on_ranks_tiers_or_where_chunks_are_cut(video_clips, tmp_path, monkeypatch):
    names = ["h264", "av1", "vp9", "h264-open-gop", "one_keyframe"]
    input_dir = video_input(tmp_path / "in", video_clips, names)
    cut_mid_segment = []
    segments = Coordinator._segments

    def noting(video, frames):
        found = segments(video, frames)
        cut_mid_segment.extend(segment.start for segment in found if segment.start not in video.segment_starts)
        return found

    monkeypatch.setattr(Coordinator, "_segments", staticmethod(noting))
    expected = None
    for size, settings in [(1, {}), (2, {}), (4, {"node_size": 2})]:
        output_dir = tmp_path / f"out{size}"
        assert run(input_dir, output_dir, size, **settings) == 0
        found = (outputs(output_dir), checkpoint_datasets(output_dir))
        expected = expected or found
        assert found == expected, f"{size} ranks differ from 1"
    assert cut_mid_segment, "the tails should have been cut mid-segment"


def test_chunks_are_runs_of_whole_segments_wherever_they_are_cut(video_clips):
    index = videos.index_video(video_clips["h264"])
    frames = np.arange(index.n_frames)
    starts = index.segment_starts()
    segments = tuple(index.segment(int(start), int(stop)) for start, stop in index.segments())
    chunk = Chunk(0, 0, index.path, frames, frames, np.zeros_like(frames), segments=segments)
    for start in starts.tolist():
        for length in (1, 5, 12, 13, 40, 200):
            stop = chunk.cut(start, length)
            assert stop == index.n_frames or stop in starts and stop >= start + length
            part = chunk.part(start, stop)
            assert [segment.start for segment in part.segments] == [s for s in starts.tolist() if start <= s < stop]


def test_fps_keeps_and_names_the_frames_pack_does(video_clips, tmp_path):
    input_dir = video_input(tmp_path / "in", video_clips, ["vfr"])
    assert run(input_dir, tmp_path / "out", fps=5.0) == 0
    rows = images(tmp_path / "out", "vfr.mp4")
    (tmp_path / "packed").mkdir()
    pack_video(video_clips["vfr"], str(tmp_path / "packed"), "vfr", fps=5.0)
    packed = []
    for tarball in sorted(pathlib.Path(tmp_path / "packed").glob("*.tar")):
        with tarfile.open(tarball) as tar:
            packed += tar.getnames()
    index = videos.index_video(video_clips["vfr"])
    kept = videos.sample_frames(index.seconds, 5.0)
    assert [row[0] for row in rows] == packed and len(packed) == len(kept) < CLIP_FRAMES
    assert [row[12] for row in rows] == index.seconds[kept].tolist()
    with pytest.raises(OutputError, match="results made with fps=5.0; this run asks for fps=2.0"):
        run(input_dir, tmp_path / "out", fps=2.0)  # the stored results were sampled otherwise


def test_a_partial_video_resumes_to_the_same_outputs(video_clips, tmp_path):
    input_dir = video_input(tmp_path / "in", video_clips, ["h264", "av1"])
    assert run(input_dir, tmp_path / "out") == 0
    expected = (outputs(tmp_path / "out"), checkpoint_datasets(tmp_path / "out"))
    make_partial(tmp_path / "out", "h264.mp4", [5, 6, 30, 31, 32, 90])
    assert run(input_dir, tmp_path / "out", 2) == 0
    assert (outputs(tmp_path / "out"), checkpoint_datasets(tmp_path / "out")) == expected


def test_a_video_that_changed_is_computed_again(video_clips, tmp_path, caplog):
    input_dir = video_input(tmp_path / "in", video_clips, ["h264"])
    assert run(input_dir, tmp_path / "out") == 0
    make_partial(tmp_path / "out", "h264.mp4", [5])
    shutil.copy(video_clips["av1"], input_dir / "h264.mp4")  # another video under the same name
    assert run(input_dir, tmp_path / "out") == 0
    assert "h264.mp4 changed since its results were computed" in caplog.text
    assert len(images(tmp_path / "out", "h264.mp4")) == CLIP_FRAMES


def test_bad_videos_are_named_and_cost_nothing_else(video_clips, tmp_path, caplog):
    """0 bytes, no video stream, a codec FFmpeg cannot decode, an MP4 cut before its index: unreadable with the
    reason. A file cut after its index: its whole frames computed, not taken as done. Corrupt packets:
    failure rows for the frames they cost. The good video and the tarballs complete."""
    input_dir = video_input(tmp_path / "in", video_clips, ["h264"])
    pack_scenes(str(input_dir))
    (input_dir / "empty.mp4").write_bytes(b"")
    write_audio_only(input_dir / "audio.mp4")
    shutil.copy(write_unknown_codec(tmp_path)[1], input_dir / "unknown.avi")
    data = pathlib.Path(video_clips["h264"]).read_bytes()
    (input_dir / "cut-before-index.mp4").write_bytes(data[:len(data) * 2 // 3])
    data = pathlib.Path(video_clips["faststart"]).read_bytes()
    (input_dir / "cut-after-index.mp4").write_bytes(data[:len(data) * 2 // 3])
    damaged = damage_packets(video_clips["h264"], str(input_dir / "damaged.mp4"), [24, 65])
    assert run(input_dir, tmp_path / "out") == EXIT_INPUT_FAILED
    for name, words in {"empty.mp4": "empty file (0 bytes): not a video",
                        "audio.mp4": "no video stream (its streams: audio (aac))",
                        "unknown.avi": "FFmpeg cannot decode its video codec",
                        "cut-before-index.mp4": "truncated before its index",
                        "cut-after-index.mp4": "truncated: the container announces 96 frames"}.items():
        assert any(name in line and words in line for line in caplog.text.splitlines()), name
    produced = sorted(name for name in os.listdir(tmp_path / "out") if name.endswith(".sqlite"))
    assert produced == ["hist_bottle.tar_db.sqlite", "hist_car.tar_db.sqlite", "hist_damaged.mp4_db.sqlite",
                        "hist_h264.mp4_db.sqlite", "hist_person.tar_db.sqlite"]
    stored = checkpoint_datasets(tmp_path / "out")
    assert {name: stored[name]["status"] for name in stored if name.endswith((".mp4", ".avi"))} == {
        "empty.mp4": "unreadable", "audio.mp4": "unreadable", "unknown.avi": "unreadable",
        "cut-before-index.mp4": "unreadable", "cut-after-index.mp4": "incomplete", "damaged.mp4": "complete",
        "h264.mp4": "complete"}
    tables = outputs(tmp_path / "out")["hist_damaged.mp4_db.sqlite"]
    failed = {row[2]: row[1] for row in tables["failures"]}
    assert damaged[0] == 24 and 24 in failed and damaged[1] in failed
    assert all(reason.startswith(("corrupt packet", "FFmpeg marks", "decoded after the damaged frame"))
               for reason in failed.values())
    assert len(tables["images"]) + len(failed) == CLIP_FRAMES
    # the frames the damage did not reach are the undamaged video's
    good = {row[11]: row for row in images(tmp_path / "out", "h264.mp4")}
    for row in tables["images"]:
        assert row[1:11] == good[row[11]][1:11]


def test_the_tools_read_a_video_data_set(video_clips, tmp_path, capsys):
    input_dir = video_input(tmp_path / "in", video_clips, ["h264"])
    assert run(input_dir, tmp_path / "out") == 0
    for module, argv in [(inspect, [str(tmp_path / "out")]),
                         (render, [str(tmp_path / "out"), "--out", str(tmp_path / "barcode.png")]),
                         (export, [str(tmp_path / "out"), "--format", "csv", "--out", str(tmp_path / "all.csv")])]:
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert module.main(parser.parse_args(argv)) in (0, None)
    assert "h264.mp4" in capsys.readouterr().out
    assert (tmp_path / "barcode.png").stat().st_size > 0
    assert "h264/000095.jpg" in (tmp_path / "all.csv").read_text()


@pytest.mark.mpi
def test_under_mpiexec_1_2_and_4_ranks_and_a_kill_and_rerun_give_the_same_outputs(video_clips, tmp_path):
    input_dir = video_input(tmp_path / "in", video_clips, ["h264", "av1", "one_keyframe"])
    expected = None
    for ranks, settings in [(1, []), (2, []), (4, ["--node-size", "2"])]:
        finished = run_mpicolor(ranks, "run", input_dir, tmp_path / f"out{ranks}", *settings)
        assert finished.returncode == 0, finished.stderr
        found = (outputs(tmp_path / f"out{ranks}"), checkpoint_datasets(tmp_path / f"out{ranks}"))
        expected = expected or found
        assert found == expected, f"{ranks} ranks differ from 1"
    for delay in (0.3, 0.8):
        output_dir = tmp_path / f"killed-{delay}"
        job = subprocess.Popen(mpicolor_command(2, "run", input_dir, output_dir, "--checkpoint-every", "0.05"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_lock(job, output_dir)
        time.sleep(delay)
        kill_job(job)
        job.wait(timeout=30)
        rerun = run_mpicolor(2, "run", input_dir, output_dir)
        assert rerun.returncode == 0, rerun.stderr
        assert (outputs(output_dir), checkpoint_datasets(output_dir)) == expected, f"kill at {delay} s"
