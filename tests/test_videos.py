"""Video data sets (mpicolor.state.videos): indexing from packets, segments decoded alone as one sequential decode
gives them, pack's names and --fps, and every bad input named."""

import argparse
import logging
import os
import pathlib
import pickle
import tarfile

import cv2
import numpy as np
import pytest

from helpers import (
    CLIP_FRAMES,
    CLIP_KEYFRAME_INTERVAL,
    CLIP_RATE,
    SHARED_DATA,
    damage_packets,
    write_audio_only,
    write_unknown_codec,
)
from mpicolor.engine import yuv
from mpicolor.tools import pack

av = pytest.importorskip("av", reason="video input needs PyAV, the video extra")
from mpicolor.state import videos  # noqa: E402
from mpicolor.state.videos import BadVideo, DecodedFrame, FrameFailure  # noqa: E402

SHARED_CLIPS = [os.path.join(SHARED_DATA, "video", name) for name in ("car-detection.mp4", "Megamind.avi",
                                                                     "vtest.avi")]
needs_shared_clips = pytest.mark.skipif(not all(map(os.path.exists, SHARED_CLIPS)),
                                        reason=f"the shared real clips {SHARED_CLIPS} are absent")


def sequential_frames(path):
    """Every frame of one plain decode of the whole file with PyAV, in output order: (pts, yuv420p pixels)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        return [(frame.pts, frame.to_ndarray(format="yuv420p")) for frame in container.decode(stream)]


def pixels(frame):
    """A `DecodedFrame`'s 4:2:0 planes laid out as PyAV's ``to_ndarray(format="yuv420p")``."""
    y, u, v = frame.planes
    return np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(-1, y.shape[1])


def decode(index, start, stop):
    """``{number: DecodedFrame or FrameFailure}`` of frames [start, stop), each exactly once."""
    found = {}
    for frame in videos.read_segment(index.segment(start, stop)):
        assert frame.number not in found, f"frame {frame.number} came twice"
        found[frame.number] = frame
    assert sorted(found) == list(range(start, stop))
    return found


def assert_segments_decode_as_the_whole_file(path, extra_ranges=()):
    index = videos.index_video(path)
    reference = sequential_frames(path)
    assert len(reference) == index.n_frames
    if index.numbering == "pts":
        reference.sort(key=lambda item: item[0])
    for start, stop in index.segments() + list(extra_ranges):
        for number, frame in decode(index, start, stop).items():
            assert isinstance(frame, DecodedFrame), frame
            np.testing.assert_array_equal(pixels(frame), reference[number][1], err_msg=f"{path} frame {number}")
            assert frame.seconds == index.seconds[number]
    return index


def test_an_index_comes_from_the_packets_in_presentation_order(video_clips):
    index = videos.index_video(video_clips["h264"])
    assert (index.n_frames, index.codec, index.numbering, index.incomplete) == (CLIP_FRAMES, "h264", "pts", None)
    assert (index.name, index.stem, index.width, index.height) == ("h264.mp4", "h264", 256, 144)
    np.testing.assert_array_equal(index.keyframes, np.arange(0, CLIP_FRAMES, CLIP_KEYFRAME_INTERVAL))
    np.testing.assert_allclose(index.seconds, np.arange(CLIP_FRAMES) / CLIP_RATE, atol=1e-9)
    assert np.all(np.diff(index.pts) > 0)
    # B-frames: the file holds frames out of presentation order
    assert not np.array_equal(index.decode_order, np.arange(CLIP_FRAMES))
    assert sorted(index.decode_order.tolist()) == list(range(CLIP_FRAMES))
    assert index.segments() == [(start, start + CLIP_KEYFRAME_INTERVAL)
                                for start in range(0, CLIP_FRAMES, CLIP_KEYFRAME_INTERVAL)]
    assert index.fingerprint.size == os.path.getsize(video_clips["h264"])


@pytest.mark.parametrize("codec", ["h264", "vp9", "av1", "hevc", "h264-open-gop"])
def test_a_segment_decodes_alone_to_the_pixels_of_one_sequential_decode(video_clips, codec):
    # the keyframe segments, then segments that start between keyframes and span several
    index = assert_segments_decode_as_the_whole_file(video_clips[codec], [(17, 30), (5, 41), (90, 96)])
    assert len(index.segments()) == CLIP_FRAMES // CLIP_KEYFRAME_INTERVAL
    # open GOPs: frames shown before a keyframe come after it in the file
    decode_position = np.argsort(index.decode_order)
    reaching_across = [keyframe for keyframe in index.keyframes[1:].tolist()
                       if decode_position[:keyframe].max() > decode_position[keyframe]]
    assert bool(reaching_across) == (codec in ("hevc", "h264-open-gop"))


@needs_shared_clips
@pytest.mark.parametrize("path", SHARED_CLIPS, ids=os.path.basename)
def test_real_clips_decode_alone_to_the_pixels_of_one_sequential_decode(path):
    index = assert_segments_decode_as_the_whole_file(path, [(index_middle := 101, index_middle + 40)])
    # AVI stores no presentation times, and Megamind.avi's packed B-frames come out with their pts swapped
    assert index.numbering == ("output order" if path.endswith(".avi") else "pts")


def test_a_segment_travels_between_ranks(video_clips):
    index = videos.index_video(video_clips["av1"])
    segment = pickle.loads(pickle.dumps(index.segment(12, 24)))
    frames = list(videos.read_segment(segment))
    assert [frame.number for frame in frames] == list(range(12, 24))


def test_decoding_starts_no_thread(video_clips):
    index = videos.index_video(video_clips["av1"])
    before = len(os.listdir("/proc/self/task"))
    during = [len(os.listdir("/proc/self/task")) for _ in videos.read_segment(index.segment(0, 24))]
    assert max(during) == before


def test_a_video_with_one_keyframe_is_one_segment_and_says_so(video_clips, caplog):
    with caplog.at_level(logging.INFO, logger="mpicolor.state.videos"):
        index = videos.index_video(video_clips["one_keyframe"])
    assert index.segments() == [(0, CLIP_FRAMES)]
    assert "one keyframe in 96 frames: the video is one segment, decoded by one rank" in caplog.text
    frames = decode(index, 50, 60)
    assert all(isinstance(frame, DecodedFrame) for frame in frames.values())


def test_variable_frame_rate_times_come_from_the_timestamps(video_clips):
    index = videos.index_video(video_clips["vfr"])
    expected = [0.04 * k for k in range(32)] + [1.28 + 0.12 * k for k in range(32)] + [5.12 + 0.02 * k for k in
                                                                                       range(32)]
    np.testing.assert_allclose(index.seconds, expected, atol=1e-6)
    # 2 samples a second: the frames at 0, 0.52 and 1.0 s, then every 4th or 5th frame, then every 25th
    kept = videos.sample_frames(index.seconds, 2)
    np.testing.assert_array_equal(kept, [0, 13, 25, 34, 38, 43, 47, 51, 55, 59, 63, 83])
    assert_segments_decode_as_the_whole_file(video_clips["vfr"])


def opencv_seconds(path):
    """The time of each frame as ``pack`` reads it: OpenCV's ``CAP_PROP_POS_MSEC`` after each ``read()``."""
    capture = cv2.VideoCapture(path)
    seconds = []
    while capture.read()[0]:
        seconds.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    return np.array(seconds)


@pytest.mark.parametrize("name", ["h264", "vp9", "av1", "vfr"])
def test_times_are_the_ones_pack_samples_by(video_clips, name):
    index = videos.index_video(video_clips[name])
    np.testing.assert_allclose(index.seconds, opencv_seconds(video_clips[name]), atol=1e-6)


@needs_shared_clips
@pytest.mark.parametrize("path", SHARED_CLIPS, ids=os.path.basename)
def test_times_of_real_clips_are_the_ones_pack_samples_by(path):
    index = videos.index_video(path)
    opencv = opencv_seconds(path)
    if path.endswith("Megamind.avi"):
        # the last packed B-frame leaves the decoder without a timestamp, and OpenCV reads it as 0 ms
        assert opencv[-1] == 0 and index.seconds[-1] == pytest.approx(270 * 125 / 2997)
        index.seconds, opencv = index.seconds[:-1], opencv[:-1]
    np.testing.assert_allclose(index.seconds, opencv, atol=1e-6)


def run_pack(*argv):
    parser = argparse.ArgumentParser()
    pack.add_arguments(parser)
    return pack.main(parser.parse_args([str(arg) for arg in argv]))


@pytest.mark.parametrize("fps", [None, 3, 7.5])
def test_pack_names_and_samples_frames_as_the_index_does(video_clips, tmp_path, fps):
    out = tmp_path / "tars"
    assert run_pack(video_clips["vfr"], "--out", out, *(["--fps", fps] if fps else [])) == 0
    with tarfile.open(out / "vfr-0000.tar") as tar:
        names = tar.getnames()
    index = videos.index_video(video_clips["vfr"])
    kept = videos.sample_frames(index.seconds, fps)
    assert names == [videos.frame_name(index.stem, k) for k in range(len(kept))]
    assert pack.frame_name is videos.frame_name


def test_fps_sampling_follows_packs_rule():
    seconds = np.array([0.0, 0.1, 0.2, 0.4999999, 0.6, 1.0, 3.0, 3.1, 3.6])
    np.testing.assert_array_equal(videos.sample_frames(seconds, 2), [0, 3, 5, 6, 8])
    np.testing.assert_array_equal(videos.sample_frames(seconds, None), np.arange(len(seconds)))
    # a rate above the video's keeps each frame once
    np.testing.assert_array_equal(videos.sample_frames(seconds, 1000), np.arange(len(seconds)))
    for fps in (0, -1.0):
        with pytest.raises(ValueError, match=f"fps={fps!r} should be > 0 frames per second"):
            videos.sample_frames(seconds, fps)
    assert videos.frame_name("film", 7) == "film/000007.jpg"


def test_the_fingerprint_tells_this_very_file(video_clips, tmp_path):
    first = videos.index_video(video_clips["h264"]).fingerprint
    assert videos.index_video(video_clips["h264"]).fingerprint == first
    copy = tmp_path / "h264.mp4"
    copy.write_bytes(pathlib.Path(video_clips["h264"]).read_bytes())
    os.utime(copy, ns=(1, 1))
    assert videos.index_video(str(copy)).fingerprint.members == first.members
    assert videos.index_video(str(copy)).fingerprint != first
    assert videos.index_video(video_clips["faststart"]).fingerprint.members != first.members


def test_videos_are_found_by_suffix(tmp_path):
    for name in ("b.MP4", "a.mkv", "c.webm", "notes.txt", "d.tar"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.avi").mkdir()
    found, rejected = videos.find_videos(str(tmp_path))
    assert [os.path.basename(path) for path in found] == ["a.mkv", "b.MP4", "c.webm"]
    assert rejected == [(str(tmp_path / "folder.avi"), "named like a video but is a directory")]
    with pytest.raises(FileNotFoundError, match="input directory does not exist"):
        videos.find_videos(str(tmp_path / "missing"))


# the bad inputs: each named with its reason, and nothing else lost

def test_a_0_byte_file_is_named(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(BadVideo, match="empty file \\(0 bytes\\): not a video") as raised:
        videos.index_video(str(empty))
    assert raised.value.path == str(empty) and str(empty) in str(raised.value)
    assert pickle.loads(pickle.dumps(raised.value)).reason == raised.value.reason


def test_a_directory_is_named(tmp_path):
    with pytest.raises(BadVideo, match="is a directory, expected a video file"):
        videos.index_video(str(tmp_path))


def test_an_mp4_cut_before_its_index_is_unreadable(video_clips, tmp_path):
    cut = tmp_path / "cut.mp4"
    data = pathlib.Path(video_clips["h264"]).read_bytes()
    cut.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(BadVideo, match="FFmpeg cannot read it as a video container .*: truncated before its index"):
        videos.index_video(str(cut))


def test_a_file_cut_after_its_index_keeps_its_whole_frames(video_clips, tmp_path):
    for name, suffix, reason in [("faststart", ".mp4", "the container announces 96 frames, 6. were found"),
                                 ("av1", ".mkv", "the container announces 3.840 s of video, its frames end at")]:
        cut = tmp_path / f"cut{suffix}"
        data = pathlib.Path(video_clips[name]).read_bytes()
        cut.write_bytes(data[:len(data) * 2 // 3])
        index = videos.index_video(str(cut))
        assert index.incomplete is not None and index.incomplete.startswith("truncated: ")
        assert 0 < index.n_frames < CLIP_FRAMES
        frames = [frame for start, stop in index.segments() for frame in decode(index, start, stop).values()]
        decoded = sum(isinstance(frame, DecodedFrame) for frame in frames)
        assert decoded >= index.n_frames - 2, [frame for frame in frames if isinstance(frame, FrameFailure)]
        assert reason.split(",")[0] in index.incomplete


def test_a_file_without_video_is_named(tmp_path):
    with pytest.raises(BadVideo, match=r"no video stream \(its streams: audio \(aac\)\)"):
        videos.index_video(write_audio_only(tmp_path / "audio.mp4"))


def test_a_codec_ffmpeg_cannot_decode_is_named(tmp_path):
    avi, unknown = write_unknown_codec(tmp_path)
    assert videos.index_video(avi).n_frames == 5
    with pytest.raises(BadVideo, match="FFmpeg cannot decode its video codec"):
        videos.index_video(unknown)


@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_corrupt_packets_cost_their_frames_and_no_other(video_clips, tmp_path, codec):
    damaged = str(tmp_path / f"damaged{os.path.splitext(video_clips[codec])[1]}")
    # the keyframe of the third segment, and a frame in the middle of the sixth (a large packet: the damage
    # stays inside its data, and Matroska's block headers stay whole)
    numbers = damage_packets(video_clips[codec], damaged, [24, 65])
    index = videos.index_video(damaged)
    assert index.n_frames == CLIP_FRAMES
    reference = sorted(sequential_frames(video_clips[codec]), key=lambda item: item[0])
    failed = {}
    for start, stop in index.segments():
        for number, frame in decode(index, start, stop).items():
            if isinstance(frame, FrameFailure):
                failed[number] = frame.reason
            elif not 24 <= number < 36 and not 60 <= number < 72:
                np.testing.assert_array_equal(pixels(frame), reference[number][1])
    # the damaged frames, and every frame decoded after them up to the next keyframe, fail; the others decode
    damaged = {24: "", numbers[1]: ""}
    decoded_after = {number for start, number in [(24, 24), (60, numbers[1])]
                     for number in index.decode_order[index._positions[number]:index._positions[start + 12]]}
    assert set(failed) == decoded_after | set(damaged), sorted(failed)
    for number in damaged:
        assert failed[number].startswith(("corrupt packet: the decoder refused it",
                                          "FFmpeg marks the decoded picture corrupt"))
    # H.264 decodes the frames after the damage (concealed), dav1d refuses them
    assert all(reason.startswith(("corrupt packet", "decoded after the damaged frame")) for number, reason in
               failed.items() if number not in damaged)
    # the same frames fail however the video is cut
    again = {number for number, frame in decode(index, 20, 70).items() if isinstance(frame, FrameFailure)}
    assert again == {number for number in failed if 20 <= number < 70}


def test_rotation_is_applied_as_pack_applies_it(video_clips):
    index = videos.index_video(video_clips["rotated"])
    frame = decode(index, 0, 1)[0]
    assert frame.rotation == 90
    upright = yuv.to_bgr(frame.pixel_format, frame.planes, frame.colorspace, frame.full_range, frame.rotation)
    capture = cv2.VideoCapture(video_clips["rotated"])
    ok, opencv = capture.read()
    assert ok and upright.shape == opencv.shape == (256, 144, 3)
    assert np.abs(upright.astype(int) - opencv).mean() < 2
    ffmpeg = frame.ffmpeg_bgr()
    assert ffmpeg.shape == (256, 144, 3) and ffmpeg.flags.c_contiguous
    assert np.abs(upright.astype(int) - ffmpeg).max() <= 2


def test_other_pixel_formats_come_converted_by_ffmpeg(video_clips, caplog):
    index = videos.index_video(video_clips["yuv444"])
    with caplog.at_level(logging.INFO, logger="mpicolor.state.videos"):
        frame = decode(index, 0, 1)[0]
    assert "frames in yuv444p are converted to BGR by FFmpeg" in caplog.text
    assert frame.pixel_format == "bgr24" and frame.planes[0].shape == (144, 256, 3)
    assert frame.ffmpeg_bgr() is frame.planes[0]
    with av.open(video_clips["yuv444"]) as container:
        np.testing.assert_array_equal(frame.planes[0], next(container.decode(video=0)).to_ndarray(format="bgr24"))


def test_a_segment_out_of_range_is_refused(video_clips):
    index = videos.index_video(video_clips["h264"])
    with pytest.raises(ValueError, match=r"frames \[90, 97\) should lie within the 96 frames of"):
        index.segment(90, 97)


def test_a_pyav_older_than_the_floor_is_named_and_refused():
    from mpicolor.state.videos import PYAV_FLOOR, pyav_recent_enough

    assert pyav_recent_enough(f"{PYAV_FLOOR}.0.0") and pyav_recent_enough("19.1")
    assert not pyav_recent_enough("10.0.0")  # Debian 12's python3-av
    assert not pyav_recent_enough("unknown")
