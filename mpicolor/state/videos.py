"""Video data sets: find them, index them from their packets, and decode one segment of frames alone.

A video is the twin of a tarball (`mpicolor.state.tarballs`): `index_video` lists its frames without
decoding a pixel, a `Fingerprint` tells whether stored results belong to this very file, and
`read_segment` hands a rank the frames of one piece of it, as `read_member` hands it a member's bytes.
Everything goes through PyAV (FFmpeg's libraries), the ``video`` extra; this module imports it only when
it is used.

Rules
-----
Frames
    The frames of the first video stream (the container's default one), numbered from 0 in presentation
    order: the order of their presentation timestamps (pts), which is the order in which a decoder outputs
    them and in which ``mpicolor pack`` numbers the frames it extracts. Indexing demuxes the packets and
    reads their timestamps and keyframe flags; it decodes nothing. One packet is one frame (true of the
    codecs and containers FFmpeg reads, hidden AV1 and VP9 frames included, since they travel inside the
    packet of a shown frame); a packet whose frame the decoder does not deliver is a failed frame, not a
    renumbering.
Times
    ``seconds`` is a frame's pts minus the stream's start time, in seconds, as OpenCV's
    ``CAP_PROP_POS_MSEC`` (which ``pack`` samples by) gives it: times come from the timestamps, never from
    frame number x frame rate, so a variable frame rate needs nothing special. `sample_frames` is ``pack``'s
    ``--fps`` rule on these times, and `frame_name` its member names.
Segments
    A segment starts at a keyframe (and the first at frame 0): a rank seeks there and decodes alone, and a
    frame's pixels are the same whoever decodes it and wherever its segment began (what follows a keyframe
    refers to nothing before it). In an open GOP (x265's default) the frames shown just before a keyframe
    are decoded after it and refer across it: they belong to the segment before, whose decoder runs past the
    keyframe for them. A video with a single keyframe is a single segment.
Numbering decoded frames
    A decoded frame is matched to its number by its pts, which is exact whatever the decoder drops. AVI
    stores no presentation timestamps (FFmpeg makes them up from frame counts, and the "packed B-frames" of
    DivX and Xvid come out of the decoder with their pts swapped), so in an AVI the frames a segment's
    decoder outputs are numbered in output order from the segment's keyframe instead (`VideoIndex.numbering`).
Rotation
    A frame carries the rotation of its display matrix (`DecodedFrame.rotation`), and
    `mpicolor.engine.yuv` converts it upright, as FFmpeg's command line and OpenCV (so ``pack``) show it:
    the palette's sample grid, and ``--crop-borders``, see the frame a viewer sees.
Bad input
    `BadVideo` names the file and the reason when it cannot be indexed at all: not a regular file, 0 bytes,
    not a container FFmpeg can read (which includes an MP4 cut short before its index), no video stream, or
    a codec FFmpeg has no decoder for. A file cut short after its index is still indexed, up to its last
    whole packet, with the reason in `VideoIndex.incomplete`.
Corrupt packets
    A frame is damaged when the decoder refuses its packet, when FFmpeg marks its picture corrupt (errors
    concealed), or when its packet gives no picture; every frame decoded after a damaged one until the next
    keyframe may refer to it and fails too, as a corrupt JPEG fails instead of coming back grey. Each is a
    `FrameFailure` with its reason; the segment's other frames are decoded as usual, and the verdicts do not
    depend on where a segment starts or ends. Decoders check what FFmpeg can check (``err_detect``
    ``crccheck+bitstream+buffer``) but do not stop at the first error (``explode``): that refuses correct
    frames of an open GOP decoded from its keyframe (a reference list naming a frame before the keyframe that
    no block uses). What a decoder cannot detect stays unseen: libavcodec's VP9 decoder turns damage into
    wrong pixels without an error (VP9 has no checksums), as libjpeg does with some damaged JPEGs.
Threads
    One decoder thread per process (``thread_count = 1``): 160 ranks on a node must not each start
    FFmpeg's default of one thread per core (and dav1d's more).
"""

import bisect
import dataclasses
import errno
import fractions
import functools
import hashlib
import logging
import os
import stat
from collections import deque
from collections.abc import Iterator

import numpy as np

from mpicolor.state.tarballs import BadDataSet, Fingerprint

log = logging.getLogger(__name__)

# what `find_videos` takes for a video: the containers FFmpeg demuxes that hold films and clips
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                                   ".m2ts", ".mts", ".flv", ".wmv", ".ogv", ".3gp")
# FFmpeg's error detection: check what can be checked (module docstring, "Corrupt packets")
_STRICT = "crccheck+bitstream+buffer"
# containers whose presentation timestamps FFmpeg makes up: their decoded frames are numbered in output order
_NO_STORED_PTS = frozenset(("avi",))
NUMBERINGS = ("pts", "output order")
# packets a segment's decoder may need past the last wanted frame's own (packed B-frames need one)
_REORDER_SLACK = 16


class BadVideo(BadDataSet):
    """A video that cannot be indexed or decoded at all (see `BadDataSet`)."""


def video_stem(path: str) -> str:
    """The name part of a video's frames, as ``pack`` takes it: the file name without its suffix."""
    return os.path.splitext(os.path.basename(path))[0]


def frame_name(stem: str, number: int) -> str:
    """``{stem}/{number:06d}.jpg``: the member name ``mpicolor pack`` gives a video's frame ``number``.

    ``number`` counts the frames kept (every frame, or the ``--fps`` sample), from 0; zero-padded so that
    name order is time order.
    """
    return f"{stem}/{number:06d}.jpg"


def find_videos(input_dir: str) -> tuple[list[str], list[tuple[str, str]]]:
    """List the video data sets of a directory.

    Videos are the entries whose name ends with one of `VIDEO_SUFFIXES` (case-insensitive) that are regular
    files or symbolic links to one; subdirectories are not searched.

    Parameters
    ----------
    input_dir : str
        The directory, as for `mpicolor.state.tarballs.find_tarballs` (which lists its tarballs).

    Returns
    -------
    videos : list of str
        Absolute paths, sorted by file name (code-point order).
    rejected : list of (str, str)
        ``(path, reason)`` for each entry named like a video that is not a regular file.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        If `input_dir` does not exist or is not a directory.
    """
    directory = os.path.abspath(input_dir)
    if not os.path.exists(directory):
        raise FileNotFoundError(errno.ENOENT, "input directory does not exist (expected a directory of videos)",
                                input_dir)
    if not os.path.isdir(directory):
        raise NotADirectoryError(errno.ENOTDIR, "input path is not a directory (expected a directory of videos)",
                                 input_dir)
    found, rejected = [], []
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda entry: entry.name):
            if not entry.name.lower().endswith(VIDEO_SUFFIXES):
                continue
            if entry.is_file():
                found.append(entry.path)
            elif entry.is_dir():
                rejected.append((entry.path, "named like a video but is a directory"))
            elif entry.is_symlink():
                rejected.append((entry.path, "named like a video but is a broken symbolic link"))
            else:
                reason = "named like a video but is not a regular file (a FIFO, socket or device)"
                rejected.append((entry.path, reason))
    return found, rejected


@dataclasses.dataclass(eq=False)
class VideoIndex:
    """The frames of one video, from its packets.

    Attributes
    ----------
    path : str
        Absolute path of the video.
    name : str
        Its file name, e.g. ``"film.mp4"``.
    stem : str
        The name part of its frames' names (`frame_name`).
    codec : str
        FFmpeg's name of the video codec, e.g. ``"h264"``.
    width, height : int
        Coded size in pixels (before any display rotation).
    time_base : fractions.Fraction
        Seconds per unit of the stream's timestamps.
    pts : ndarray of shape (n_frames,), int64
        Each frame's presentation timestamp, in frame (presentation) order: increasing.
    seconds : ndarray of shape (n_frames,), float64
        Each frame's time: ``(pts - start) * time_base``, ``start`` the stream's start time.
    keyframes : ndarray of shape (n_keyframes,), int64
        Numbers of the frames whose packets are keyframes, increasing.
    decode_order : ndarray of shape (n_frames,), int64
        The frame number of each packet, in decode (file) order.
    dts : ndarray of shape (n_frames,), int64
        Each packet's decode timestamp, in decode order (its pts where the container gives none).
    numbering : {"pts", "output order"}
        How a segment's decoded frames find their numbers (module docstring).
    incomplete : str or None
        None for a whole video, else why the index stops early.
    fingerprint : Fingerprint
        Size, modification time, and in ``members`` the SHA-256 of the packet table (`packet_digest`), as a
        tarball's holds that of its member table.
    """

    path: str
    name: str
    stem: str
    codec: str
    width: int
    height: int
    time_base: fractions.Fraction
    pts: np.ndarray
    seconds: np.ndarray
    keyframes: np.ndarray
    decode_order: np.ndarray
    dts: np.ndarray
    numbering: str
    incomplete: str | None
    fingerprint: Fingerprint

    @property
    def n_frames(self) -> int:
        """Frames in the video."""
        return len(self.pts)

    def segment_starts(self) -> np.ndarray:
        """Frame numbers where a segment may start: 0 and every keyframe, increasing.

        Returns
        -------
        ndarray of shape (n_segments,), int64
        """
        return np.union1d(np.zeros(1 if self.n_frames else 0, np.int64), self.keyframes)

    def segments(self) -> list[tuple[int, int]]:
        """The video cut at every keyframe: ``[(start, stop), ...]`` covering every frame once, in order."""
        starts = self.segment_starts()
        return list(zip(starts.tolist(), starts[1:].tolist() + [self.n_frames]))

    def segment(self, start: int, stop: int) -> "Segment":
        """What a rank needs to decode frames ``[start, stop)`` alone: see `Segment` and `read_segment`.

        The decoder starts at the last keyframe at or before ``start`` whose packet comes before every
        packet of the wanted frames; a segment that starts at a keyframe (`segments`) wastes nothing.

        Raises
        ------
        ValueError
            If not ``0 <= start < stop <= n_frames``.
        """
        if not 0 <= start < stop <= self.n_frames:
            raise ValueError(f"frames [{start}, {stop}) should lie within the {self.n_frames} frames of {self.path}")
        position = self._positions
        first_packet = int(position[start:stop].min())
        starts = self.segment_starts()
        candidates = starts[(starts <= start) & (position[starts] <= first_packet)]
        # decode position 0 is the start of the file: always a place to begin
        key_position = int(position[candidates[-1]]) if len(candidates) else 0
        last_packet = int(position[start:stop].max())
        window = self.decode_order[key_position:last_packet + 1 + _REORDER_SLACK]
        clean = self._clean_keyframe_positions
        return Segment(path=self.path, start=start, stop=stop, numbering=self.numbering,
                       first_output=int(self.decode_order[key_position]), key_position=key_position,
                       key_dts=int(self.dts[key_position]), last_dts=int(self.dts[last_packet]),
                       pts=self.pts[start:stop].copy(), seconds=self.seconds[start:stop].copy(),
                       packet_numbers=window.copy(), packet_pts=self.pts[window],
                       clean_keyframes=clean[(clean > key_position) & (clean < key_position + len(window))])

    @functools.cached_property
    def _positions(self) -> np.ndarray:
        """Decode position of each frame's packet, by frame number."""
        position = np.empty(self.n_frames, np.int64)
        position[self.decode_order] = np.arange(self.n_frames)
        return position

    @functools.cached_property
    def _clean_keyframe_positions(self) -> np.ndarray:
        """Decode positions of the keyframes no frame reaches across: the packets before one are exactly the
        frames shown before it (a closed GOP; in an open one, frames shown before the keyframe are decoded
        after it). A property of the file, the same whichever segment asks."""
        positions = self._positions[self.keyframes]
        shown_before = np.maximum.accumulate(self.decode_order)
        return positions[(positions > 0) & (shown_before[positions - 1] == positions - 1)
                         & (self.keyframes == positions)]


def packet_digest(dts, pts, positions, sizes, keyframes):
    """SHA-256 (hex) of a packet table: each packet's dts, pts, byte position, size and keyframe flag, in file order.

    Parameters
    ----------
    dts, pts, positions, sizes : sequence of int, length n
        Positions are -1 where the demuxer gives none.
    keyframes : sequence of bool, length n
    """
    digest = hashlib.sha256()
    for column in (dts, pts, positions, sizes):
        digest.update(np.asarray(column, dtype="<i8").tobytes())
    digest.update(np.asarray(keyframes, dtype=np.uint8).tobytes())
    return digest.hexdigest()


# the oldest PyAV whose API the video core uses (a frame's rotation, a decoder's flush_buffers): setup.cfg's floor
PYAV_FLOOR = 18


def _import_av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - the extra is installed wherever the tests run
        raise ImportError("video input needs PyAV: pip install 'mpicolor[video]'") from error
    if not pyav_recent_enough(av.__version__):
        raise ImportError(f"video input needs PyAV >= {PYAV_FLOOR}, this is PyAV {av.__version__} (Debian 12's "
                          "python3-av is 10): pip install 'av>=18', or conda-forge's av")
    return av


def pyav_recent_enough(version):
    """True when PyAV ``version`` (``"18.0.0"``) is at least `PYAV_FLOOR`."""
    major = version.split(".")[0]
    return major.isdigit() and int(major) >= PYAV_FLOOR


def _check_file(path: str) -> os.stat_result:
    """The file's stat; BadVideo unless it is a non-empty regular file."""
    try:
        file_stat = os.stat(path)
    except OSError as error:
        raise BadVideo(path, f"cannot open for reading: {error.strerror}") from error
    if not stat.S_ISREG(file_stat.st_mode):
        kind = "a directory" if stat.S_ISDIR(file_stat.st_mode) else "not a regular file"
        raise BadVideo(path, f"is {kind}, expected a video file")
    if file_stat.st_size == 0:
        raise BadVideo(path, "empty file (0 bytes): not a video")
    return file_stat


def _open_video(path: str):
    """``(container, stream)``: the file opened by FFmpeg and its first video stream, ready to decode.

    Raises BadVideo when FFmpeg cannot read the container, it holds no video stream, or FFmpeg has no
    decoder for its codec.
    """
    av = _import_av()
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as error:
        raise BadVideo(path, f"FFmpeg cannot read it as a video container ({_ffmpeg_reason(error)}): truncated "
                             "before its index, corrupt, or not a video") from None
    try:
        if not container.streams.video:
            kinds = ", ".join(f"{stream.type} ({_codec_name(stream)})" for stream in container.streams) or "none"
            raise BadVideo(path, f"no video stream (its streams: {kinds})")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None or not context.codec.is_decoder:
            raise BadVideo(path, f"FFmpeg cannot decode its video codec ({_codec_name(stream)})")
        # one thread per rank, set before the decoder opens (module docstring, "Threads")
        context.thread_type = "NONE"
        context.thread_count = 1
        context.options = {"err_detect": _STRICT}
    except BaseException:
        container.close()
        raise
    return container, stream


def _codec_name(stream) -> str:
    context = stream.codec_context
    if context is not None:
        return context.codec.name
    tag = getattr(stream, "codec_tag", "") or ""
    return f"with tag {tag!r}" if tag else "unknown to FFmpeg"


def _ffmpeg_reason(error) -> str:
    """FFmpeg's words for an error, without the path PyAV appends."""
    return getattr(error, "strerror", None) or str(error)


def index_video(path: str) -> VideoIndex:
    """Index the frames of one video from its packets, decoding nothing.

    Parameters
    ----------
    path : str
        Path of the video.

    Returns
    -------
    VideoIndex
        Its frames in presentation order, keyframes, timestamps and fingerprint; ``incomplete`` says why it
        stops early if it does. A video stream without a single packet gives no frames and is not an error.

    Raises
    ------
    BadVideo
        If the file is not a regular file, is empty, is not a container FFmpeg can read, holds no video
        stream, or is in a codec FFmpeg cannot decode (module docstring, "Bad input").
    """
    av = _import_av()
    file_stat = _check_file(path)
    container, stream = _open_video(path)
    dts, pts, positions, sizes, keys = [], [], [], [], []
    incomplete = None
    try:
        format_name = container.format.name.split(",")[0]
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                if packet.is_corrupt and packet.pos is not None and packet.pos + packet.size > file_stat.st_size:
                    incomplete = (f"truncated: file ends at byte {file_stat.st_size:,} inside the packet of frame "
                                  f"{len(pts)} (decode order)")
                    break
                dts.append(packet.dts)
                pts.append(packet.pts)
                positions.append(-1 if packet.pos is None else packet.pos)
                sizes.append(packet.size)
                keys.append(packet.is_keyframe)
        except av.FFmpegError as error:
            incomplete = f"the demuxer stopped after {len(pts)} packets: {_ffmpeg_reason(error)}"
        announced = stream.frames
        announced_end = _announced_end(stream)
        start_time = stream.start_time
        time_base = fractions.Fraction(stream.time_base) if stream.time_base else fractions.Fraction(1)
        codec, width, height = stream.codec_context.codec.name, stream.codec_context.width, stream.codec_context.height
    finally:
        container.close()
    if incomplete is None and announced and len(pts) < announced:
        incomplete = f"truncated: the container announces {announced} frames, {len(pts)} were found"
    numbering = "output order" if format_name in _NO_STORED_PTS else "pts"
    dts_array, pts_array, numbering = _timestamps(dts, pts, numbering, path)
    order = np.argsort(pts_array, kind="stable")
    decode_order = np.empty_like(order)
    decode_order[order] = np.arange(len(order))
    presentation_pts = pts_array[order]
    start = start_time if start_time is not None else (int(presentation_pts[0]) if len(pts) else 0)
    seconds = (presentation_pts - start).astype(np.float64) * float(time_base)
    keyframes = np.sort(decode_order[np.flatnonzero(np.asarray(keys, bool))]) if keys else np.zeros(0, np.int64)
    if incomplete is None and announced_end is not None and len(pts) > 1:
        interval = float(np.median(np.diff(presentation_pts))) * float(time_base)
        frames_end = (int(presentation_pts[-1]) - (start_time or 0)) * float(time_base) + interval
        if announced_end - frames_end > 2 * interval:
            incomplete = (f"truncated: the container announces {announced_end:.3f} s of video, its frames end at "
                          f"{frames_end:.3f} s")
    fingerprint = Fingerprint(file_stat.st_size, file_stat.st_mtime_ns,
                              packet_digest(dts_array, pts_array, positions, sizes, keys))
    index = VideoIndex(os.path.abspath(path), os.path.basename(path), video_stem(path), codec, width, height,
                       time_base, presentation_pts, seconds, keyframes.astype(np.int64), decode_order.astype(np.int64),
                       dts_array, numbering, incomplete, fingerprint)
    log.debug("%s: %d frames, %d keyframes, %s", index.path, index.n_frames, len(index.keyframes), codec)
    if index.n_frames and len(index.segment_starts()) == 1:
        log.info("%s: one keyframe in %d frames: the video is one segment, decoded by one rank", index.path,
                 index.n_frames)
    if incomplete is not None:
        log.warning("%s: index stops early, %d frames kept: %s", index.path, index.n_frames, incomplete)
    return index


def _announced_end(stream):
    """The video stream's duration in seconds as its container's header gives it, or None."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    # Matroska and WebM: FFmpeg's muxer writes it as a tag of the stream, "HH:MM:SS.fraction"
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (AttributeError, ValueError):
        return None


def _timestamps(dts, pts, numbering, path):
    """``(dts, pts, numbering)`` as int64 arrays with the gaps filled.

    A packet without a pts takes its dts (and without a dts its pts); without either, or with two packets of
    one pts, pts cannot tell frames apart: they are numbered in output order, and a missing pts becomes the
    previous one plus one so that presentation order stays decode order there.
    """
    n = len(pts)
    pts_array = np.empty(n, np.int64)
    dts_array = np.empty(n, np.int64)
    guessed = False
    previous = -1
    for k in range(n):
        known = pts[k] if pts[k] is not None else dts[k]
        if known is None:
            known, guessed = previous + 1, True
        pts_array[k] = known
        dts_array[k] = dts[k] if dts[k] is not None else (dts_array[k - 1] + 1 if k else known)
        previous = known
    if guessed or len(np.unique(pts_array)) < n:
        if numbering != "output order":
            log.warning("%s: packets without timestamps or with repeated ones: its frames are numbered in the "
                        "order the decoder outputs them", path)
        numbering = "output order"
    return dts_array, pts_array, numbering


@dataclasses.dataclass(frozen=True, eq=False)
class Segment:
    """What a rank needs to decode frames ``[start, stop)`` of a video alone (`VideoIndex.segment`).

    Small and picklable: a coordinator can send it to a worker, which needs no index of its own.

    Attributes
    ----------
    path : str
    start, stop : int
        The frames wanted, by number.
    numbering : {"pts", "output order"}
    first_output : int
        The number of the frame the decoder starts at, the first it outputs; with ``"output order"`` the
        frames after it are numbered from it. ``start - first_output`` frames are decoded and thrown away
        (none when ``start`` is a keyframe).
    key_position : int
        Decode position (packet number in file order) of the packet the decoder starts at: a keyframe, or
        the file's first packet.
    key_dts : int
        Its decode timestamp, where the demuxer seeks.
    last_dts : int
        Decode timestamp of the last packet a wanted frame needs; the decoder is drained after it.
    pts, seconds : ndarray of shape (stop - start,)
        The wanted frames' pts (int64) and times (float64).
    packet_numbers, packet_pts : ndarray of shape (n_packets,), int64
        The frame number and pts of each packet from ``key_position`` on, through the last one needed and a
        few after it (a packed B-frame comes out of the next packet).
    clean_keyframes : ndarray of shape (n_clean,), int64
        Decode positions of the keyframes after ``key_position`` that no frame reaches across (every frame
        decoded before one is shown before it): the decoder is drained and reset there, so that what it
        delivers of a group of pictures never depends on the packets after it, whoever decodes it.
    """

    path: str
    start: int
    stop: int
    numbering: str
    first_output: int
    key_position: int
    key_dts: int
    last_dts: int
    pts: np.ndarray
    seconds: np.ndarray
    packet_numbers: np.ndarray
    packet_pts: np.ndarray
    clean_keyframes: np.ndarray

    def packet_number(self, position: int) -> int:
        """The frame number of the packet at decode ``position``, or -1 beyond `packet_numbers`."""
        offset = position - self.key_position
        return int(self.packet_numbers[offset]) if 0 <= offset < len(self.packet_numbers) else -1


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedFrame:
    """One decoded frame of a segment, as the decoder gave it: its planes, not yet converted.

    Attributes
    ----------
    number : int
        Its number in the video (presentation order).
    seconds : float
        Its time (`VideoIndex.seconds`).
    pixel_format : str
        FFmpeg's name of the planes' layout: ``"yuv420p"`` or ``"yuvj420p"`` (full range, as MJPEG), whose
        conversion `mpicolor.engine.yuv` does itself; or ``"bgr24"``, already converted by FFmpeg (every
        other layout: 4:2:2, 4:4:4, more than 8 bits, ...).
    planes : tuple of ndarray
        For 4:2:0, ``(y, u, v)``: y of shape (height, width), u and v of shape (ceil(height / 2),
        ceil(width / 2)), uint8, views of the decoder's buffers (rows may be padded: strided, not
        contiguous). For ``"bgr24"``, ``(image,)`` of shape (height, width, 3), uint8.
    colorspace : int
        FFmpeg's ``AVColorSpace`` of the frame (1 BT.709, 5 and 6 BT.601, 9 BT.2020, 2 unspecified).
    full_range : bool
        Whether luma spans 0-255 (JPEG range) instead of 16-235.
    rotation : int
        Display rotation, degrees counter-clockwise, a multiple of 90 (FFmpeg's display matrix, rounded
        as OpenCV rounds it); the pixels are as coded.
    source : av.VideoFrame or None
        The decoder's frame the planes belong to, for `ffmpeg_bgr`.
    """

    number: int
    seconds: float
    pixel_format: str
    planes: tuple
    colorspace: int
    full_range: bool
    rotation: int
    source: object = dataclasses.field(default=None, repr=False)

    def ffmpeg_bgr(self):
        """The whole frame upright in BGR by FFmpeg's own conversion (swscale).

        For a whole frame it is the fastest there is (1 ms at 1080p against 5 ms for
        `mpicolor.engine.yuv.to_bgr`, whose strength is converting only the pixels read).

        Returns
        -------
        ndarray of shape (upright height, upright width, 3), uint8, C-contiguous
        """
        image = self.planes[0] if self.pixel_format == "bgr24" else self.source.to_ndarray(format="bgr24")
        return np.ascontiguousarray(np.rot90(image, self.rotation // 90)) if self.rotation else image


@dataclasses.dataclass(frozen=True)
class FrameFailure:
    """A frame of a segment that could not be decoded, and why.

    Attributes
    ----------
    number : int
    seconds : float
    reason : str
    """

    number: int
    seconds: float
    reason: str


# the 4:2:0 layouts `mpicolor.engine.yuv` converts itself; anything else comes as FFmpeg's bgr24
_OWN_CONVERSION = frozenset(("yuv420p", "yuvj420p"))
# FFmpeg's AVCOL_RANGE_JPEG
_FULL_RANGE = 2


def read_segment(segment: Segment) -> Iterator[DecodedFrame | FrameFailure]:
    """Decode frames ``[segment.start, segment.stop)`` of a video alone.

    Seeks to the segment's keyframe, decodes through the last packet its frames need, then drains the
    decoder. Each wanted frame comes out once, either as a `DecodedFrame` or as a `FrameFailure` with the
    reason (module docstring, "Corrupt packets"): its packet was refused, FFmpeg marks its picture corrupt,
    it was decoded after a damaged frame since the last keyframe (it may refer to it), or the decoder never
    delivered it. A frame is given out once the fate of every packet decoded before it is known (a B-frame
    waits for the P-frame decoded before it, shown after it), so that a frame's verdict never depends on
    where its segment ends. Frames come in presentation order; failures found only at the end come last.

    Parameters
    ----------
    segment : Segment
        From `VideoIndex.segment` of the same file.

    Yields
    ------
    DecodedFrame or FrameFailure

    Raises
    ------
    BadVideo
        If the file can no longer be opened, or holds no packet at the segment's keyframe (it changed since
        it was indexed).
    """
    av = _import_av()
    container, stream = _open_video(segment.path)
    by_pts = dict(zip(segment.packet_pts.tolist(), segment.packet_numbers.tolist()))
    verdicts = _Verdicts(segment)
    next_output = segment.first_output
    try:
        clean_keyframes = set(segment.clean_keyframes.tolist())
        for position, packet in _packets_from(container, stream, segment):
            if packet is not None:
                verdicts.fed(position, packet.is_keyframe)
            frames = _drain(stream.codec_context) if position in clean_keyframes else []
            try:
                frames += _decode(stream.codec_context, packet)
            except av.FFmpegError as error:
                verdicts.refused(position, f"corrupt packet: the decoder refused it ({_ffmpeg_reason(error)})")
            for frame in frames:
                number, next_output = _number(frame, segment, by_pts, next_output, verdicts.refused_numbers)
                verdicts.output(number, frame)
            yield from verdicts.ready()
            if verdicts.complete():
                break
    finally:
        container.close()
    yield from verdicts.finish()


class _Verdicts:
    """What becomes of each packet a segment's decoder is fed, and the wanted frames waiting for a verdict.

    A frame decoded after a damaged one since the last keyframe may refer to it: it fails too. Damage is
    known when a packet is refused, when a picture comes out marked corrupt, or at the end for a packet that
    gave no picture; a wanted frame is judged once every packet decoded before it has its fate.
    """

    def __init__(self, segment):
        self.segment = segment
        self.offsets = {number: offset for offset, number in enumerate(segment.packet_numbers.tolist())}
        self.known = np.zeros(len(segment.packet_numbers), bool)
        self.frontier = 0  # every packet offset below it has its fate
        self.n_fed = 0
        self.keyframes: list[int] = []  # offsets, increasing
        self.damaged: list[tuple[int, int]] = []  # (offset, frame number), increasing
        self.refused_numbers: set[int] = set()
        self.pending: deque[tuple[int, int, object]] = deque()  # (offset, number, frame or failure), output order
        self.given = np.zeros(segment.stop - segment.start, bool)
        self.noted_conversion = False

    def fed(self, position, keyframe):
        offset = position - self.segment.key_position
        self.n_fed = offset + 1
        if keyframe:
            self.keyframes.append(offset)

    def refused(self, position, reason):
        offset = position - self.segment.key_position
        number = self.segment.packet_number(position)
        self.refused_numbers.add(number)
        self._damaged(offset, number)
        self._settle(offset, number, FrameFailure(number, self._seconds(number), reason))

    def output(self, number, frame):
        offset = self.offsets.get(number)
        if offset is None:  # not among the packets the segment knows: nothing of it is wanted
            return
        if frame.is_corrupt:
            self._damaged(offset, number)
            frame = FrameFailure(number, self._seconds(number), "FFmpeg marks the decoded picture corrupt (errors "
                                                                "concealed)")
        self._settle(offset, number, frame)

    def ready(self):
        """The pending frames whose verdict is known, in output order."""
        while self.pending and self.pending[0][0] < self.frontier:
            yield self._verdict(*self.pending.popleft())

    def complete(self):
        return not self.pending and self.given.all()

    def finish(self):
        """The verdicts left when the decoder is done: packets that gave no picture are damage."""
        for offset in np.flatnonzero(~self.known[:self.n_fed]).tolist():
            self._damaged(offset, int(self.segment.packet_numbers[offset]))
        self.frontier = len(self.known)
        yield from self.ready()
        for k in np.flatnonzero(~self.given).tolist():
            yield FrameFailure(self.segment.start + k, float(self.segment.seconds[k]),
                               "the decoder delivered no picture for it (its packet, or a frame it depends on, is "
                               "corrupt or missing)")

    def _settle(self, offset, number, result):
        if offset < len(self.known):
            self.known[offset] = True
            while self.frontier < len(self.known) and self.known[self.frontier]:
                self.frontier += 1
        wanted = self.segment.start <= number < self.segment.stop
        if wanted and not self.given[number - self.segment.start]:
            self.given[number - self.segment.start] = True
            self.pending.append((offset, number, result))

    def _damaged(self, offset, number):
        # a frame shown before the keyframe the decoder started at refers to frames before it: its loss is
        # expected, and it damages nothing of the segment (its own segment decodes it)
        if number >= self.segment.first_output:
            bisect.insort(self.damaged, (offset, number))

    def _seconds(self, number):
        wanted = self.segment.start <= number < self.segment.stop
        return float(self.segment.seconds[number - self.segment.start]) if wanted else float("nan")

    def _verdict(self, offset, number, result):
        if isinstance(result, FrameFailure):
            return result
        since = self.keyframes[bisect.bisect_right(self.keyframes, offset) - 1] if self.keyframes else 0
        sources = [source for damaged, source in self.damaged if since <= damaged < offset]
        if sources:
            return FrameFailure(number, self._seconds(number), f"decoded after the damaged frame {sources[-1]} since "
                                                               "the last keyframe: it may refer to it")
        decoded = _decoded(result, number, self._seconds(number))
        if decoded.pixel_format == "bgr24" and not self.noted_conversion:
            self.noted_conversion = True
            log.info("%s: frames in %s are converted to BGR by FFmpeg (mpicolor.engine.yuv converts 8-bit 4:2:0 "
                     "only)", self.segment.path, result.format.name)
        return decoded


def _drain(context):
    """The frames a decoder still holds, after which it is reset to take a new group of pictures."""
    held = context.decode(None)
    context.flush_buffers()
    return held


def _decode(context, packet):
    """The frames one packet gives; a decoder left unable to take more after an error (dav1d) is reset."""
    try:
        return context.decode(packet)
    except BlockingIOError:
        # dav1d after a refused packet answers EAGAIN to everything: reset it, and the frames it held are lost
        context.flush_buffers()
        return context.decode(packet)


def _packets_from(container, stream, segment):
    """``(decode position, packet)`` of the stream from the segment's keyframe, then ``(position, None)``.

    With ``"pts"`` numbering they stop at ``last_dts``: draining the decoder there gives the frames it holds
    back for reordering. In output order they go on until the caller has every frame: a packed B-frame
    comes out of the next packet, and draining early would shift the count.
    """
    av = _import_av()
    container.seek(segment.key_dts, stream=stream, backward=True, any_frame=False)
    position = segment.key_position
    started = False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            dts = packet.dts if packet.dts is not None else packet.pts
            if not started:
                if dts is not None and dts < segment.key_dts:
                    continue  # the seek landed on an earlier keyframe: skip to ours
                if dts != segment.key_dts:
                    raise BadVideo(segment.path, f"no packet at decode time {segment.key_dts} where the segment "
                                                 f"of frames [{segment.start}, {segment.stop}) starts: the file "
                                                 "changed since it was indexed, or its demuxer cannot seek there")
                started = True
            yield position, packet
            position += 1
            if segment.numbering == "pts" and dts is not None and dts >= segment.last_dts:
                break
    except av.FFmpegError as error:
        log.warning("%s: the demuxer stopped in frames [%d, %d): %s", segment.path, segment.start, segment.stop,
                    _ffmpeg_reason(error))
    yield position, None


def _number(frame, segment, by_pts, next_output, refused_numbers):
    """``(number or None, next_output)``: the number of a decoded frame (module docstring, "Numbering")."""
    if segment.numbering == "pts":
        return by_pts.get(frame.pts), next_output
    # output order: the next number whose packet the decoder did not refuse
    while next_output in refused_numbers:
        next_output += 1
    return next_output, next_output + 1


def _decoded(frame, number, seconds):
    """A decoder's frame as a `DecodedFrame` (FFmpeg's bgr24 for the layouts engine.yuv leaves to it)."""
    rotation = round(frame.rotation / 90) % 4 * 90
    full_range = frame.color_range == _FULL_RANGE or frame.format.name == "yuvj420p"
    if frame.format.name in _OWN_CONVERSION:
        height, width = frame.height, frame.width
        sizes = ((height, width),) + ((-(-height // 2), -(-width // 2)),) * 2
        planes = tuple(_plane(frame.planes[k], rows, columns) for k, (rows, columns) in enumerate(sizes))
        return DecodedFrame(number, seconds, frame.format.name, planes, frame.colorspace, full_range, rotation, frame)
    return DecodedFrame(number, seconds, "bgr24", (frame.to_ndarray(format="bgr24"),), frame.colorspace, full_range,
                        rotation)


def _plane(plane, rows, columns):
    """A plane of the decoder's buffer as a (rows, columns) uint8 view (its rows padded to ``line_size``)."""
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :columns]


class FpsSampler:
    """``--fps``: keep the first frame at or after every ``1 / fps`` seconds of video time, frame by frame.

    A frame is kept when its time has reached the next sample time ``k / fps``; the next sample time is then
    the first after this frame, so that a gap in the video gives one frame, not a burst, and a rate above
    the video's keeps every frame (none is repeated). A microsecond of slack keeps a frame at 0.5 s whose
    time reads 0.499999 s (OpenCV's ``CAP_PROP_POS_MSEC`` may). ``mpicolor pack`` and a run on videos
    sample with this one rule.

    Parameters
    ----------
    fps : float or None
        Samples per second, > 0; None keeps every frame.

    Raises
    ------
    ValueError
        If ``fps`` is not None and not > 0.
    """

    def __init__(self, fps):
        if fps is not None and not fps > 0:
            raise ValueError(f"fps={fps!r} should be > 0 frames per second")
        self.fps = fps
        self.next_sample = 0  # the k of the next sample time k / fps

    def keep(self, seconds):
        """Whether the next frame, at ``seconds``, is kept (frames in presentation order)."""
        if self.fps is None:
            return True
        position = seconds * self.fps + 1e-6 * self.fps
        if position < self.next_sample:
            return False
        self.next_sample = int(position) + 1
        return True


def sample_frames(seconds, fps):
    """The frames ``--fps`` keeps (`FpsSampler`), by number.

    Parameters
    ----------
    seconds : ndarray of shape (n_frames,), float64
        The frames' times, in frame order (`VideoIndex.seconds`).
    fps : float or None
        Samples per second, > 0; None keeps every frame.

    Returns
    -------
    ndarray of shape (n_kept,), int64
        Numbers of the frames kept, increasing; a kept frame's name is ``frame_name(stem, k)`` for its
        position ``k`` in this array, as ``pack`` names it.

    Raises
    ------
    ValueError
        If ``fps`` is not None and not > 0.
    """
    sampler = FpsSampler(fps)
    return np.asarray([number for number, time in enumerate(np.asarray(seconds, np.float64).tolist())
                       if sampler.keep(time)], dtype=np.int64)
