"""``mpicolor pack``: decode videos into tarballs of JPEG frames that ``mpicolor run`` reads.

Decoding uses OpenCV's ``VideoCapture`` (its FFmpeg backend): OpenCV is already a dependency, so packing
needs nothing more, and ``read()`` hands over BGR frames that ``cv2.imencode`` turns into JPEG directly.
PyAV would give exact presentation timestamps and codec errors as exceptions, but it is another binary
dependency for little gain here: ``CAP_PROP_POS_MSEC`` is good enough to sample at ``--fps``.

Video ``clips/film.mp4`` becomes ``film-0000.tar``, ``film-0001.tar``, ... in ``--out``, each with at most
``--frames-per-tar`` members ``film/000000.jpg``, ``film/000001.jpg``, ... numbered in time order, so that
file-name order is time order. Frames stream from the decoder into the open tar: memory stays flat
whatever the film's length. Each tarball is written under a temporary name and renamed when complete, so
an interrupted pack never leaves a half tarball that looks finished.
"""

import io
import logging
import os
import re
import sys
import tarfile
import time

import cv2

from mpicolor.job.exits import EXIT_INPUT_FAILED, EXIT_OK
from mpicolor.job.launch import launcher_rank
from mpicolor.job.logs import setup_logging
from mpicolor.job.progress import format_duration
from mpicolor.state.atomic import publish, temporary_path
from mpicolor.state.videos import FpsSampler, frame_name

log = logging.getLogger(__name__)

# seconds between progress log lines when stderr is not a terminal, and between bar updates when it is
LOG_INTERVAL, BAR_INTERVAL = 10.0, 0.25


class VideoError(RuntimeError):
    """A video could not be opened or decoded."""


def add_arguments(parser):
    """The flags of ``mpicolor pack``."""
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (anything FFmpeg decodes)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder of the tarballs (created if missing)")
    parser.add_argument("--fps", type=float, default=None, metavar="F",
                        help="sample F frames per second of video time (default: every frame)")
    parser.add_argument("--frames-per-tar", type=int, default=1000, metavar="N",
                        help="at most N frames per tarball (default 1000)")
    parser.add_argument("--quality", type=int, default=90, metavar="Q", help="JPEG quality 1-100 (default 90)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace tarballs of these videos that --out already holds (default: refuse)")


def main(args):
    """Pack every video; under ``mpiexec`` the videos are shared round-robin among the ranks.

    Returns
    -------
    int
        0 when every video was packed, 1 when any failed (each failure is named in the log), 2 for a bad
        setting.
    """
    if launcher_rank() is not None:
        from mpicolor.job.mpi import gather_to_root, round_robin

        rank, size, mine = round_robin(args.videos)
    else:
        rank, size, mine = 0, 1, list(args.videos)
    setup_logging(rank, size)
    try:
        _check_settings(args)
        stems = _stems(args.videos)
        os.makedirs(args.out, exist_ok=True)
    except (ValueError, OSError) as error:
        if rank == 0:
            log.error("%s", error)
        return 2
    live = size == 1 and sys.stderr.isatty()  # several ranks' bars on one terminal would garble
    outcomes = [_pack_one(video, stems[video], args, live) for video in mine]
    if size > 1:
        gathered = gather_to_root(outcomes)
        if rank != 0:
            return EXIT_INPUT_FAILED if any(outcome[2] for outcome in outcomes) else EXIT_OK
        outcomes = sorted(outcome for per_rank in gathered for outcome in per_rank)
    return _summarise(outcomes)


def _check_settings(args):
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps {args.fps} should be > 0 frames per second")
    if args.frames_per_tar < 1:
        raise ValueError(f"--frames-per-tar {args.frames_per_tar} should be >= 1")
    if not 1 <= args.quality <= 100:
        raise ValueError(f"--quality {args.quality} should be between 1 and 100")


def _stems(videos):
    """``{video: stem}``; ValueError when two videos share a stem (their tarballs would overwrite each other)."""
    videos_by_stem = {}
    for video in videos:
        stem = os.path.splitext(os.path.basename(video))[0]
        if stem in videos_by_stem:
            raise ValueError(f"videos {videos_by_stem[stem]} and {video} share the name {stem!r}, so their "
                             f"tarballs {stem}-0000.tar... would collide; rename one or pack them into "
                             "different --out folders")
        videos_by_stem[stem] = video
    return {video: stem for stem, video in videos_by_stem.items()}


def tarball_name(stem, part):
    """``{stem}-{part:04d}.tar``."""
    return f"{stem}-{part:04d}.tar"


def _pack_one(video, stem, args, live):
    """Pack one video; ``(video, frames written, error or None)``. A failure is logged, never raised."""
    try:
        existing = _existing_parts(args.out, stem)
        if existing and not args.overwrite:
            shown = ", ".join(existing[:3]) + ("..." if len(existing) > 3 else "")
            raise VideoError(f"{args.out} already holds {shown} of {video}; remove them or pass --overwrite")
        for name in existing:
            os.remove(os.path.join(args.out, name))
        written = pack_video(video, args.out, stem, fps=args.fps, frames_per_tar=args.frames_per_tar,
                             quality=args.quality, live=live)
    except (VideoError, OSError, cv2.error) as error:
        log.error("%s: %s", video, error)
        return video, 0, str(error)
    return video, written, None


def _existing_parts(out, stem):
    pattern = re.compile(re.escape(stem) + r"-\d{4,}\.tar")
    return sorted(name for name in os.listdir(out) if pattern.fullmatch(name))


def pack_video(video, out, stem, fps=None, frames_per_tar=1000, quality=90, live=False):
    """Decode ``video`` and write its frames as JPEG into tarballs ``{stem}-{part:04d}.tar`` in ``out``.

    Parameters
    ----------
    video : str
        Path of the video.
    out : str
        Existing folder of the tarballs.
    stem : str
        Name part of the tarballs and members.
    fps : float or None
        Keep the first frame at or after every ``1/fps`` seconds of video time; None keeps every frame. A
        rate above the video's keeps every frame (frames are never duplicated).
    frames_per_tar : int
        Frames per tarball (the last holds the rest).
    quality : int
        JPEG quality, 1-100.
    live : bool
        Show a progress bar on stderr instead of log lines.

    Returns
    -------
    int
        Frames written.

    Raises
    ------
    VideoError
        When the video cannot be opened or yields no frame.
    """
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        raise VideoError("cannot be opened as a video (missing, unreadable, or a format FFmpeg does not decode)")
    try:
        announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        rate = capture.get(cv2.CAP_PROP_FPS)
        writer = _TarballWriter(out, stem, frames_per_tar)
        progress = _Progress(stem, announced / rate if announced > 0 and rate > 0 else None, live)
        sampler = FpsSampler(fps)
        written = decoded = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                decoded += 1
                seconds = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if not sampler.keep(seconds):
                    continue
                ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
                if not ok:
                    raise VideoError(f"frame {decoded - 1} ({frame.shape}) could not be encoded as JPEG")
                writer.add(frame_name(stem, written), jpeg.tobytes())
                written += 1
                progress.update(written, seconds)
            writer.close()
        except BaseException:
            writer.abandon()
            raise
        progress.finish(written, decoded)
    finally:
        capture.release()
    if written == 0:
        raise VideoError("no frame could be decoded (empty, corrupt, or not a video)")
    # containers may announce a frame more or less than they hold; far fewer means the video is cut short
    if decoded < announced - 1:
        log.warning("%s: decoding stopped after %d of the %d frames the container announces (truncated or "
                    "corrupt?); the frames decoded are packed", video, decoded, announced)
    return written


class _TarballWriter:
    """Streams members into ``{stem}-{part:04d}.tar``, starting the next part every ``frames_per_tar`` members."""

    def __init__(self, out, stem, frames_per_tar):
        self.out, self.stem, self.frames_per_tar = out, stem, frames_per_tar
        self.part = 0
        self.members = 0
        self.tar = None
        self.temporary = None
        self.mtime = int(time.time())

    def add(self, name, data):
        if self.tar is None:
            final = tarball_name(self.stem, self.part)
            self.temporary = temporary_path(os.path.join(self.out, final))
            self.tar = tarfile.open(self.temporary, "w", format=tarfile.GNU_FORMAT)
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
        self.tar.addfile(info, io.BytesIO(data))
        self.members += 1
        if self.members == self.frames_per_tar:
            self._publish()

    def _publish(self):
        self.tar.close()
        final = os.path.join(self.out, tarball_name(self.stem, self.part))
        publish(self.temporary, final)
        log.debug("wrote %s (%d frames)", final, self.members)
        self.tar, self.temporary = None, None
        self.part += 1
        self.members = 0

    def close(self):
        """Publish the last, short part."""
        if self.tar is not None:
            self._publish()

    def abandon(self):
        """Remove the part being written: complete parts stay, a half one never appears."""
        if self.tar is not None:
            self.tar.close()
            os.remove(self.temporary)
            self.tar = None


class _Progress:
    """A bar on a terminal, a log line every ``LOG_INTERVAL`` seconds otherwise."""

    def __init__(self, stem, duration, live):
        self.stem, self.duration, self.live = stem, duration, live
        self.started = self.shown = time.monotonic()

    def update(self, written, seconds):
        now = time.monotonic()
        if now - self.shown < (BAR_INTERVAL if self.live else LOG_INTERVAL):
            return
        self.shown = now
        if self.duration:
            fraction = min(seconds / self.duration, 1.0)
            rate = seconds / (now - self.started)
            eta = (self.duration - seconds) / rate if rate > 0 else None
            where = (f"{format_duration(seconds)}/{format_duration(self.duration)} of video "
                     f"({100 * fraction:.0f}%), ETA {format_duration(eta)}")
        else:
            fraction, where = 0.0, f"{format_duration(seconds)} of video"
        text = f"{self.stem}: {written} frames, {where}"
        if self.live:
            filled = int(30 * fraction)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text} ")
            sys.stderr.flush()
        else:
            log.info("%s", text)

    def finish(self, written, decoded):
        if self.live:
            sys.stderr.write("\n")
        elapsed = time.monotonic() - self.started
        log.info("%s: %d frames packed of %d decoded in %s (%.0f frames/s)", self.stem, written, decoded,
                 format_duration(elapsed), decoded / elapsed if elapsed > 0 else 0.0)


def _summarise(outcomes):
    failed = [(video, error) for video, _, error in outcomes if error]
    frames = sum(written for _, written, _ in outcomes)
    log.info("packed %d of %d videos, %d frames", len(outcomes) - len(failed), len(outcomes), frames)
    for video, error in failed:
        log.error("failed: %s (%s)", video, error)
    return EXIT_INPUT_FAILED if failed else EXIT_OK
