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
(whole runs from videos against ``pack`` then ``run``) comes with the run's video input.
"""

import fractions
import os

import cv2
import numpy as np

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
    codec : {"h264", "vp9", "av1"}
        H.264 with B-frames (libx264), VP9 (libvpx) or AV1 (SVT-AV1), with the options of `ENCODERS`.
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
