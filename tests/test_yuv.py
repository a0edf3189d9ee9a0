"""YUV to BGR (mpicolor.engine.yuv): swscale's integer arithmetic exactly, FFmpeg's output within a level or two,
upright frames, and only the pixels the palette reads."""

import os

import numpy as np
import pytest

from helpers import SHARED_DATA
from mpicolor.engine import yuv
from mpicolor.engine.palette import extract_palette, sample_indices, sample_rows

av = pytest.importorskip("av", reason="video input needs PyAV, the video extra")
from mpicolor.state import videos  # noqa: E402

COLORSPACES = (1, 2, 4, 5, 6, 7, 9)  # BT.709, unspecified, FCC, BT.601 (twice), SMPTE 240M, BT.2020
SHARED_CLIPS = [os.path.join(SHARED_DATA, "video", name) for name in ("car-detection.mp4", "Megamind.avi",
                                                                     "vtest.avi")]


def random_planes(height, width, seed=0):
    """4:2:0 planes of noise, chroma of ceil(size / 2)."""
    rng = np.random.default_rng(seed)
    chroma = (-(-height // 2), -(-width // 2))
    return (rng.integers(0, 256, (height, width), dtype=np.uint8), rng.integers(0, 256, chroma, dtype=np.uint8),
            rng.integers(0, 256, chroma, dtype=np.uint8))


def gold_bgr(planes, colorspace, full_range):
    """The conversion in plain NumPy: each pixel from its 2x2 block's chroma, 16 fractional bits, truncated."""
    y, u, v = (plane.astype(np.int64) for plane in planes)
    offset, scale, crv, cbu, cgu, cgv = yuv.conversion(colorspace, full_range).tolist()
    cb = u.repeat(2, 0).repeat(2, 1)[:y.shape[0], :y.shape[1]] - 128
    cr = v.repeat(2, 0).repeat(2, 1)[:y.shape[0], :y.shape[1]] - 128
    luma = scale * (y - offset)
    channels = [luma + cbu * cb, luma - cgu * cb - cgv * cr, luma + crv * cr]
    return np.clip(np.stack(channels, axis=-1) >> 16, 0, 255).astype(np.uint8)


def ffmpeg_bgr(planes, colorspace, full_range):
    """FFmpeg's conversion of the same planes (swscale through PyAV's ``to_ndarray``)."""
    y, u, v = planes
    frame = av.VideoFrame.from_ndarray(np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(-1, y.shape[1]),
                                       format="yuv420p")
    frame.colorspace, frame.color_range = colorspace, 2 if full_range else 1
    return frame.to_ndarray(format="bgr24")


@pytest.mark.parametrize("colorspace", COLORSPACES)
@pytest.mark.parametrize("full_range", [False, True])
@pytest.mark.parametrize("height, width", [(48, 64), (5, 7)])
def test_the_kernel_is_the_integer_arithmetic_exactly(colorspace, full_range, height, width):
    planes = random_planes(height, width, seed=colorspace)
    np.testing.assert_array_equal(yuv.to_bgr("yuv420p", planes, colorspace, full_range),
                                  gold_bgr(planes, colorspace, full_range))


@pytest.mark.parametrize("colorspace", COLORSPACES)
@pytest.mark.parametrize("full_range", [False, True])
def test_the_matrix_and_range_are_ffmpegs(colorspace, full_range):
    planes = random_planes(64, 96, seed=colorspace)
    difference = np.abs(yuv.to_bgr("yuv420p", planes, colorspace, full_range).astype(int)
                        - ffmpeg_bgr(planes, colorspace, full_range))
    # swscale's SIMD code keeps fewer fractional bits: measured within (1, 2, 1) levels on x86
    assert difference.max() <= 2, difference.reshape(-1, 3).max(axis=0)
    assert difference.mean() < 0.6


def test_the_matrix_and_range_matter():
    planes = random_planes(64, 96)
    bt709 = ffmpeg_bgr(planes, 1, False).astype(int)
    # far beyond the 2 levels between this kernel and FFmpeg
    assert np.abs(yuv.to_bgr("yuv420p", planes, 6, False) - bt709).max() >= 10
    assert np.abs(yuv.to_bgr("yuv420p", planes, 1, True) - bt709).max() >= 10


def decoded_frames(path, count):
    """The first `count` frames of a video as `read_segment` gives them."""
    index = videos.index_video(path)
    return [frame for frame in videos.read_segment(index.segment(0, min(count, index.n_frames)))]


def real_clips(video_clips):
    return [video_clips["h264"], video_clips["vp9"], video_clips["av1"]] + [
        path for path in SHARED_CLIPS if os.path.exists(path)]


def test_real_frames_are_within_two_levels_of_ffmpegs(video_clips):
    for path in real_clips(video_clips):
        index = videos.index_video(path)
        wanted = set(np.linspace(0, index.n_frames - 1, 8).astype(int).tolist())
        with av.open(path) as container:
            for number, frame in enumerate(container.decode(video=0)):
                if number not in wanted:
                    continue
                planes = tuple(np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :columns]
                               for plane, (rows, columns) in zip(frame.planes, [(frame.height, frame.width)]
                                                                 + [(-(-frame.height // 2), -(-frame.width // 2))] * 2))
                own = yuv.to_bgr(frame.format.name, planes, frame.colorspace, frame.color_range == 2)
                difference = np.abs(own.astype(int) - frame.to_ndarray(format="bgr24"))
                assert difference.max() <= 2, (path, number, difference.reshape(-1, 3).max(axis=0))
                assert difference.mean() < 1.1, (path, number)


@pytest.mark.parametrize("rotation", yuv.ROTATIONS)
@pytest.mark.parametrize("height, width", [(48, 64), (5, 7)])
def test_frames_come_upright(rotation, height, width):
    planes = random_planes(height, width)
    upright = yuv.to_bgr("yuv420p", planes, 1, False, rotation)
    np.testing.assert_array_equal(upright, np.rot90(gold_bgr(planes, 1, False), rotation // 90))
    assert upright.shape[:2] == yuv.upright_shape(height, width, rotation) and upright.flags.c_contiguous


@pytest.mark.parametrize("rotation", yuv.ROTATIONS)
def test_the_grid_is_the_whole_frame_at_the_pixels_the_palette_samples(rotation):
    planes = random_planes(144, 256)
    whole = yuv.to_bgr("yuv420p", planes, 6, False, rotation)
    rows, offsets, column_step, size = sample_rows(*whole.shape[:2])
    indices = sample_indices(*whole.shape[:2])
    buffer = np.zeros_like(whole)
    yuv.grid_to_bgr("yuv420p", planes, 6, False, rows, offsets, column_step, rotation, out=buffer)
    np.testing.assert_array_equal(buffer.reshape(-1, 3)[indices], whole.reshape(-1, 3)[indices])
    untouched = np.ones(whole.shape[0] * whole.shape[1], bool)
    untouched[indices] = False
    assert not buffer.reshape(-1, 3)[untouched].any()
    sample = yuv.sample_to_bgr("yuv420p", planes, 6, False, rows, offsets, column_step, rotation)
    assert sample.shape == (size, 3)
    np.testing.assert_array_equal(sample, whole.reshape(-1, 3)[indices])


def test_the_palette_of_the_grid_is_the_palette_of_the_whole_frame(video_clips):
    for frame in decoded_frames(video_clips["h264"], 24)[::6]:
        whole = yuv.to_bgr(frame.pixel_format, frame.planes, frame.colorspace, frame.full_range)
        buffer = np.zeros_like(whole)
        yuv.grid_to_bgr(frame.pixel_format, frame.planes, frame.colorspace, frame.full_range,
                        *sample_rows(*whole.shape[:2])[:3], out=buffer)
        assert extract_palette(buffer) == extract_palette(whole)


def test_frames_ffmpeg_converted_already_are_rotated_and_sampled_too(video_clips):
    frame = decoded_frames(video_clips["yuv444"], 1)[0]
    assert frame.pixel_format == "bgr24"
    image = frame.planes[0]
    np.testing.assert_array_equal(yuv.to_bgr("bgr24", frame.planes, frame.colorspace, frame.full_range, 270),
                                  np.rot90(image, 3))
    rows, offsets, column_step, _ = sample_rows(*image.shape[:2])
    np.testing.assert_array_equal(
        yuv.sample_to_bgr("bgr24", frame.planes, 1, False, rows, offsets, column_step),
        image.reshape(-1, 3)[sample_indices(*image.shape[:2])])


def test_bad_arguments_are_named():
    planes = random_planes(8, 8)
    with pytest.raises(ValueError, match=r"rotation=45 should be one of \(0, 90, 180, 270\)"):
        yuv.to_bgr("yuv420p", planes, 1, False, 45)
    with pytest.raises(ValueError, match=r"out should be a C-contiguous uint8 array of shape \(8, 8, 3\)"):
        yuv.to_bgr("yuv420p", planes, 1, False, out=np.empty((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="pixel_format='nv12' should be one of"):
        yuv.to_bgr("nv12", planes, 1, False)
    with pytest.raises(ValueError, match="chroma planes of a 8x8 frame should be 4x4, got 8x8"):
        yuv.to_bgr("yuv420p", (planes[0], planes[0], planes[0]), 1, False)
