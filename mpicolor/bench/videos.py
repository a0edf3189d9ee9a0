"""Video clips for the benchmarks and tests, and the cost of each step from a video's packets to BGR pixels.

Clips are made here rather than downloaded: every frame of a 1080p H.264 and AV1 clip comes from the
photographs of ``../shared/data/frames/hd`` (`make_bench_clips`), each shown for a few seconds with a slow pan
and zoom so that inter frames carry real motion, not copies. The same writer makes the tests' small clips from
the bundled frames (`write_clip`, `panning_frames`).

``python -m mpicolor.bench.videos [--clips DIR] [VIDEO...]`` makes the clips when missing and prints, per clip,
the cost per frame of each step, single-threaded: indexing (demux only), decoding, the YUV to BGR conversion
of `mpicolor.engine.yuv` (whole frame, and only the pixels the fast palette samples), FFmpeg's conversion
(PyAV's ``to_ndarray(format="bgr24")``) and, for comparison with the tarball path, JPEG encoding and decoding of
the same frame at quality 90; and the bytes per frame of the video and of the JPEG. ``mpicolor bench videos``
(`mpicolor.bench.video_runs`) compares whole runs from videos against ``pack`` then ``run``.
"""

import argparse
import fractions
import os
import statistics
import sys
import time

import cv2
import numpy as np

from mpicolor.engine import yuv
from mpicolor.state import videos

# the benchmark clips: every frame of each photograph for SECONDS_PER_PHOTO at RATE frames per second
RATE, SECONDS_PER_PHOTO, BENCH_SIZE = 25, 2, (1920, 1080)
# how far the view travels over one photograph: it zooms in by ZOOM while panning across the room that leaves
ZOOM = 1.15
JPEG_QUALITY = 90  # what `mpicolor pack` writes
# codec -> (encoder, container suffix, encoder options); one decoder thread per rank is set by `videos`, the
# encoders here may use both cores
ENCODERS = {
    "h264": ("libx264", ".mp4", {"preset": "veryfast", "crf": "23", "x264-params": "bframes=3:scenecut=0"}),
    "vp9": ("libvpx-vp9", ".webm", {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}),
    "av1": ("libsvtav1", ".mkv", {"preset": "10", "crf": "35"}),
    # open GOPs: frames shown before a keyframe are decoded after it and refer across it (x265's default)
    "hevc": ("libx265", ".mp4", {"preset": "veryfast", "x265-params": "log-level=error:bframes=3:scenecut=0"}),
    "h264-open-gop": ("libx264", ".mp4", {"preset": "veryfast", "x264-params": "bframes=3:scenecut=0:open-gop=1"}),
}


def panning_frames(image, n_frames, size, zoom=ZOOM):
    """Frames of a slow zoom and pan across one picture.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
        The picture, BGR.
    n_frames : int
    size : (int, int)
        Width and height of the frames.
    zoom : float, default ZOOM
        How far the view zooms in from the first frame to the last.

    Yields
    ------
    ndarray of shape (size[1], size[0], 3), uint8
        BGR frames.
    """
    width, height = size
    # the whole picture scaled to cover the frame at the final zoom, so that the view never leaves it
    cover = max(width / image.shape[1], height / image.shape[0]) * zoom
    for k in range(n_frames):
        progress = k / max(1, n_frames - 1)
        scale = cover / (zoom ** (1 - progress))  # from the widest view to the closest
        view_width, view_height = width / scale * cover, height / scale * cover
        big = image.shape[1] * cover, image.shape[0] * cover
        left = (big[0] - view_width) * progress
        top = (big[1] - view_height) * (1 - progress) / 2
        # the view's corner and its scale as one affine map from the covering picture to the frame
        factor = scale / cover
        matrix = np.float32([[factor * cover, 0, -left * factor], [0, factor * cover, -top * factor]])
        yield cv2.warpAffine(image, matrix, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def write_clip(path, frames, codec, rate=RATE, keyframe_interval=None, times=None, rotation=0, threads=0,
               pixel_format="yuv420p", container_options=None):
    """Encode BGR frames into a video file with PyAV.

    Parameters
    ----------
    path : str
        The file; its suffix chooses the container.
    frames : iterable of ndarray of shape (height, width, 3), uint8
        BGR frames, all of one size (even width and height).
    codec : {"h264", "vp9", "av1", "hevc", "h264-open-gop"}
        H.264 with B-frames (libx264), VP9 (libvpx), AV1 (SVT-AV1), HEVC (x265) or H.264 with open GOPs, with
        the options of `ENCODERS`.
    rate : int, default RATE
        Frames per second.
    keyframe_interval : int or None
        Frames between keyframes; None leaves it to the encoder.
    times : sequence of float or None
        Presentation time of each frame in seconds, for a variable frame rate; None spaces them ``1 / rate``.
    rotation : int, default 0
        Display rotation stored in the container, degrees counter-clockwise (as FFmpeg's display matrix).
    threads : int, default 0
        Encoder threads; 0 lets the encoder choose.
    pixel_format : str, default "yuv420p"
        The encoded layout, e.g. ``"yuv444p"``.
    container_options : dict or None
        The muxer's options, e.g. ``{"movflags": "faststart"}`` for an MP4 with its index first.

    Returns
    -------
    int
        Frames written.
    """
    import av

    encoder, _, options = ENCODERS[codec]
    time_base = fractions.Fraction(1, 1000 * rate)
    written = 0
    # SVT-AV1 prints its settings on stdout unless told to log errors only
    os.environ.setdefault("SVT_LOG", "1")
    with av.open(path, "w", options=container_options or {}) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(encoder, rate=rate, options=dict(options))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = pixel_format
                stream.time_base = time_base
                stream.codec_context.time_base = time_base
                stream.codec_context.thread_count = threads
                if keyframe_interval is not None:
                    stream.codec_context.gop_size = keyframe_interval
                if rotation:
                    stream.set_display_rotation(rotation)
            picture = av.VideoFrame.from_ndarray(frame, format="bgr24")
            seconds = written / rate if times is None else times[written]
            picture.pts = round(seconds / time_base)
            picture.time_base = time_base
            container.mux(stream.encode(picture))
            written += 1
        container.mux(stream.encode(None))
    return written


def make_bench_clips(frames_dir, clips_dir, codecs=("h264", "av1")):
    """The benchmark clips, made when missing: every photograph of `frames_dir` panned for SECONDS_PER_PHOTO.

    Parameters
    ----------
    frames_dir : str
        A folder of photographs (``../shared/data/frames/hd``: 13 of 1920x1080).
    clips_dir : str
        Where the clips are kept (``hd-h264.mp4``, ``hd-av1.mkv``); made if missing, never committed.
    codecs : tuple of str
        Keys of `ENCODERS`.

    Returns
    -------
    list of str
        The clips' paths, one per codec.
    """
    os.makedirs(clips_dir, exist_ok=True)
    photos = sorted(os.path.join(frames_dir, name) for name in os.listdir(frames_dir)
                    if name.lower().endswith((".jpg", ".jpeg", ".png")))
    clips = []
    for codec in codecs:
        path = os.path.join(clips_dir, f"hd-{codec}{ENCODERS[codec][1]}")
        if not os.path.exists(path):
            frames = (frame for photo in photos
                      for frame in panning_frames(cv2.imread(photo), RATE * SECONDS_PER_PHOTO, BENCH_SIZE))
            partial = path + ".partial" + ENCODERS[codec][1]
            # a keyframe every 5 s, as web video has them every few seconds
            write_clip(partial, frames, codec, keyframe_interval=5 * RATE)
            os.replace(partial, path)
        clips.append(path)
    return clips


def _median_ms(seconds):
    return 1000 * statistics.median(seconds) if seconds else float("nan")


def measure_clip(path, max_timed=100, index_repeats=5):
    """Cost per frame of each step from a video's packets to BGR pixels, on one core.

    Every frame is decoded (`mpicolor.state.videos.read_segment` over the whole clip, the run's decoding,
    timed alone); then up to `max_timed` frames spread over the clip are converted each way and encoded and
    decoded as JPEG of quality 90, the steps timed in a rotating order so that none always runs on a warm or
    a cold cache.

    Parameters
    ----------
    path : str
    max_timed : int
        Frames whose conversions and JPEG round trip are timed.
    index_repeats : int
        Times the clip is indexed (the median counts).

    Returns
    -------
    dict
        ``clip``, ``size`` (upright WxH), ``frames``, ``index_ms`` (whole clip), and per frame in ms (medians):
        ``decode`` (demux, decode and the planes, mean over every frame), ``own_full``, ``own_grid`` (into a
        frame buffer), ``own_sample`` (the sample alone), ``ffmpeg_bgr``, ``jpeg_encode``, ``jpeg_decode``
        (as the run decodes a frame for the fast method); ``video_bytes`` and ``jpeg_bytes`` per frame, and
        ``max_difference`` and ``mean_difference`` of the conversion against FFmpeg's per channel (B, G, R).
    """
    from mpicolor.engine.decode import decode_frame
    from mpicolor.engine.palette import sample_rows, smooth_chroma

    index_times = []
    for _ in range(index_repeats):
        started = time.perf_counter()
        index = videos.index_video(path)
        index_times.append(time.perf_counter() - started)
    timed = set(np.linspace(0, index.n_frames - 1, min(max_timed, index.n_frames)).astype(int).tolist())
    steps = {name: [] for name in ("own_full", "own_grid", "own_sample", "ffmpeg_bgr", "jpeg_encode", "jpeg_decode")}
    differences, jpeg_sizes, upright = [], [], None
    started = time.perf_counter()
    whole = index.segment(0, index.n_frames)
    decoded = sum(isinstance(frame, videos.DecodedFrame) for frame in videos.read_segment(whole))
    decode_seconds = time.perf_counter() - started
    for turn, (frame, bgr_from_ffmpeg, ffmpeg_seconds) in enumerate(_timed_frames(index, timed)):
        if frame is None:
            continue
        steps["ffmpeg_bgr"].append(ffmpeg_seconds)
        arguments = (frame.pixel_format, frame.planes, frame.colorspace, frame.full_range)
        upright = yuv.upright_shape(*frame.planes[0].shape[:2], frame.rotation)
        rows, offsets, column_step, size = sample_rows(*upright)
        buffer, sample = np.empty(upright + (3,), np.uint8), np.empty((size, 3), np.uint8)
        jpeg = cv2.imencode(".jpg", bgr_from_ffmpeg, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        jpeg_sizes.append(len(jpeg))
        grid = (rows, offsets, column_step, frame.rotation)
        work = [
            ("own_full", yuv.to_bgr, (*arguments, frame.rotation, buffer), {}),
            ("own_grid", yuv.grid_to_bgr, (*arguments, *grid, buffer), {}),
            ("own_sample", yuv.sample_to_bgr, (*arguments, *grid, sample), {}),
            ("jpeg_encode", cv2.imencode, (".jpg", bgr_from_ffmpeg, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]), {}),
            ("jpeg_decode", decode_frame, (jpeg,), {"smooth_chroma": smooth_chroma("fast")}),
        ]
        for name, step, step_arguments, keywords in work[turn % len(work):] + work[:turn % len(work)]:
            step_started = time.perf_counter()
            step(*step_arguments, **keywords)
            steps[name].append(time.perf_counter() - step_started)
        own = yuv.to_bgr(*arguments)
        differences.append(np.abs(own.astype(np.int16) - bgr_from_ffmpeg).reshape(-1, 3))
    difference = np.concatenate(differences)
    result = {"clip": os.path.basename(path), "size": f"{upright[1]}x{upright[0]}", "frames": index.n_frames,
              "index_ms": _median_ms(index_times),
              "decode": 1000 * decode_seconds / decoded,
              "video_bytes": os.path.getsize(path) / index.n_frames, "jpeg_bytes": statistics.mean(jpeg_sizes),
              "max_difference": difference.max(axis=0).tolist(),
              "mean_difference": difference.mean(axis=0).round(3).tolist()}
    result.update({name: _median_ms(seconds) for name, seconds in steps.items()})
    return result


def _timed_frames(index, timed):
    """Decode every frame of a clip; for the `timed` ones, ``(frame, FFmpeg's BGR of it, its seconds)``."""
    for frame in videos.read_segment(index.segment(0, index.n_frames)):
        if not isinstance(frame, videos.DecodedFrame) or frame.number not in timed or frame.pixel_format == "bgr24":
            yield None, None, 0.0
            continue
        started = time.perf_counter()
        bgr = frame.ffmpeg_bgr()
        yield frame, bgr, time.perf_counter() - started


def print_clip_table(rows):
    """The measurements as a Markdown table, per frame in ms unless said."""
    header = ["clip", "size", "frames", "index (whole clip, ms)", "decode", "own BGR, whole", "own BGR, grid",
              "own BGR, sample", "FFmpeg bgr24", "JPEG encode q90", "JPEG decode", "KB/frame video / JPEG",
              "own vs FFmpeg, max / mean (B, G, R)"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        cells = [row["clip"], row["size"], str(row["frames"]), f"{row['index_ms']:.1f}"]
        cells += [f"{row[name]:.2f}" for name in ("decode", "own_full", "own_grid", "own_sample", "ffmpeg_bgr",
                                                  "jpeg_encode", "jpeg_decode")]
        cells.append(f"{row['video_bytes'] / 1000:.1f} / {row['jpeg_bytes'] / 1000:.0f}")
        cells.append(f"{tuple(row['max_difference'])} / {tuple(row['mean_difference'])}")
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    """``python -m mpicolor.bench.videos``: make the benchmark clips, then measure them and any videos named."""
    parser = argparse.ArgumentParser(prog="python -m mpicolor.bench.videos", description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="more videos to measure, e.g. "
                                                                  "../shared/data/video/*")
    parser.add_argument("--frames", default=os.path.join("..", "shared", "data", "frames", "hd"), metavar="DIR",
                        help="photographs the 1080p clips are made of (default ../shared/data/frames/hd)")
    parser.add_argument("--clips", default=os.path.join("bench-out", "video-clips"), metavar="DIR",
                        help="where the 1080p clips are kept (default bench-out/video-clips)")
    parser.add_argument("--max-timed", type=int, default=100, metavar="N",
                        help="frames per clip whose conversions and JPEG round trip are timed (default 100)")
    args = parser.parse_args(argv)
    clips = (make_bench_clips(args.frames, args.clips) if os.path.isdir(args.frames) else []) + args.videos
    if not clips:
        parser.error(f"no clips: {args.frames} is not a folder and no VIDEO was named")
    print_clip_table([measure_clip(path, args.max_timed) for path in clips])
    return 0


if __name__ == "__main__":
    sys.exit(main())
