"""A rank's share of the work: read the bytes of assigned frames by offset, or decode a video's segments, and
compute their palettes; index data sets and write sqlite files when its coordinator asks."""

import contextlib
import errno
import functools
import logging
import os
import time
import warnings
import zlib
from types import SimpleNamespace

import numpy as np

from mpicolor.engine import yuv
from mpicolor.engine.borders import crop, detect_borders
from mpicolor.engine.decode import check_head, decode_frame, repeated_chroma
from mpicolor.engine.palette import (
    BadFrame,
    default_scale,
    extract_palette,
    palette_from_bytes,
    sample_rows,
    smooth_chroma,
    sorted_palette,
)
from mpicolor.job.protocol import ChunkResult, IndexedTarball, IndexJob, RankStats, SqliteJob, SqliteWritten
from mpicolor.state.checkpoint import DamagedCheckpoint
from mpicolor.state.datasets import is_video
from mpicolor.state.results import BACKEND_CODES, BACKEND_NAMES, CPU, FAILED, GPU, PENDING
from mpicolor.state.sqlite import write_sqlite_from_checkpoint
from mpicolor.state.tarballs import BadTarball, Member, index_tarball, read_member
from mpicolor.state.videos import (
    BadVideo,
    DecodedFrame,
    FrameFailure,
    frame_name,
    index_video,
    read_segment,
    sample_frames,
)

log = logging.getLogger(__name__)

MAX_GPU_FAILURES = 3  # frames in a row the device fails before a GPU rank gives it up for the CPU
# A frame's first read: the headers of real frames lie within it, and most frames are whole in it.
HEAD_BYTES = 64 << 10
# Errors of a read that pass when tried again: a parallel or network file system's hiccup (EIO, ETIMEDOUT,
# EAGAIN, EBUSY, ENOLINK and the connection errors of FUSE and SMB mounts), an NFS handle gone stale after a
# server failover (ESTALE: the retry reopens the file), descriptors or kernel memory running out for a
# moment (EMFILE, ENFILE, ENOMEM). EINTR never reaches here: Python retries it itself (PEP 475).
TRANSIENT_ERRORS = frozenset((
    errno.EIO, errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY, errno.ENOLINK, errno.ECONNRESET, errno.ECONNABORTED,
    errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.ESTALE, errno.EMFILE, errno.ENFILE, errno.ENOMEM,
))
# seconds between the tries of a read that failed with one of them: five tries, about a second in all
RETRY_DELAYS = (0.0625, 0.125, 0.25, 0.5)


def file_stamp(status):
    """What tells two versions of a file apart, from its ``os.stat_result``: device, inode, size, mtime (ns)."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def answer(computer, order):
    """What a rank answers an order of its coordinator: the `ChunkResult` of a `Chunk`, the `IndexedTarball` of
    an `IndexJob`, the `SqliteWritten` of a `SqliteJob`.

    Parameters
    ----------
    computer : FrameComputer
    order : Chunk, IndexJob or SqliteJob
    """
    if isinstance(order, IndexJob):
        return index_for_coordinator(order.number, order.path, computer.config.fps)
    if isinstance(order, SqliteJob):
        return write_sqlite(computer.config, order.name)
    return computer.compute(order)


def write_sqlite(config, name):
    """Write tarball ``name``'s sqlite file from its checkpoint file; a `SqliteWritten` that says why it could
    not be."""
    try:
        write_sqlite_from_checkpoint(config.output_dir, [name], config.stored_settings())
    except (OSError, DamagedCheckpoint) as error:
        return SqliteWritten(name, str(error))
    return SqliteWritten(name)


def index_for_coordinator(number, path, fps=None):
    """Index one data set (on whichever rank its coordinator asks) into an :class:`IndexedTarball`; a read error
    that may pass is tried again (`retried`). A video's members are the frames ``fps`` keeps
    (`mpicolor.state.videos.sample_frames`; None keeps every frame), named as ``pack`` names them."""
    if is_video(path):
        return _index_video(number, path, fps)

    def stamped_index():
        # stamped before indexing: a change while indexing then shows as a change when frames are read
        return file_stamp(os.stat(path)), index_tarball(path)

    try:
        stamp, index = retried(stamped_index, f"indexing {path}")
    except BadTarball as error:
        return IndexedTarball(number, path, [], np.zeros(0, np.int64), np.zeros(0, np.int64), error=error.reason)
    except OSError as error:  # gone before it was stamped, or a read error while indexing
        return IndexedTarball(number, path, [], np.zeros(0, np.int64), np.zeros(0, np.int64),
                              error=f"cannot read it ({_error_text(error)})")
    return IndexedTarball(number, path, [member.name for member in index.members],
                          np.array([member.offset for member in index.members], np.int64),
                          np.array([member.size for member in index.members], np.int64),
                          index.skipped, index.incomplete, fingerprint=index.fingerprint, stamp=stamp)


def _index_video(number, path, fps):
    """`index_for_coordinator` for a video: `offsets` are the kept frames' numbers in the video."""
    try:
        stamp, index = retried(lambda: (file_stamp(os.stat(path)), index_video(path)), f"indexing {path}")
    except (BadVideo, ImportError) as error:
        reason = error.reason if isinstance(error, BadVideo) else str(error)
        return IndexedTarball(number, path, [], np.zeros(0, np.int64), np.zeros(0, np.int64), error=reason)
    except OSError as error:
        return IndexedTarball(number, path, [], np.zeros(0, np.int64), np.zeros(0, np.int64),
                              error=f"cannot read it ({_error_text(error)})")
    kept = sample_frames(index.seconds, fps)
    return IndexedTarball(number, path, [frame_name(index.stem, k) for k in range(len(kept))], kept,
                          np.zeros(len(kept), np.int64), incomplete=index.incomplete, fingerprint=index.fingerprint,
                          stamp=stamp, seconds=index.seconds[kept], video=index)


def retried(action, doing, before_retry=None):
    """The value of ``action()``, tried again after each of `RETRY_DELAYS` while it fails with one of
    `TRANSIENT_ERRORS`; ``before_retry()`` runs before every new try. ``doing`` names the work in the log.

    Raises
    ------
    OSError
        The last error: one that cannot pass, or a transient one that lasted every try (`_error_text`).
    """
    for delay in RETRY_DELAYS:
        try:
            return action()
        except OSError as error:
            if error.errno not in TRANSIENT_ERRORS:
                raise
            log.debug("%s: %s; trying again in %.2f s", doing, error, delay)
        if before_retry is not None:
            before_retry()
        time.sleep(delay)
    return action()


def _error_text(error):
    """An OSError that `retried` raised, in words: how many tries a transient one lasted."""
    tries = f", {len(RETRY_DELAYS) + 1} tries in {sum(RETRY_DELAYS):.1f} s" if error.errno in TRANSIENT_ERRORS else ""
    return f"{error.strerror or error}{tries}"


class Unread(Exception):
    """A frame's bytes could not be read for a reason that is not the frame's own; the message says why."""


def _unread(reason):
    raise Unread(reason)


def _decoded_or_bad(frame):
    """A video's `DecodedFrame` as it came; a `FrameFailure` as the `BadFrame` of its reason."""
    if isinstance(frame, FrameFailure):
        raise BadFrame(frame.reason)
    return frame


@contextlib.contextmanager
def _frame_notes(notes, position):
    """Record the warnings raised inside into ``notes[position]``: a library's warning belongs to the frame's
    record, not to an 11-million-line log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if caught:
        notes.setdefault(position, []).extend(str(warning.message) for warning in caught)


def stand_in_palette(frame_bytes, clusters):
    """The palette of ``--simulate`` runs: colours from the bytes' CRC-32, equal shares.

    Cheap, but different for different frames, so that simulated outputs still show a frame stored in the
    wrong place.
    """
    seed = zlib.crc32(frame_bytes)
    packed = np.array([(seed * (k + 1)) % (1 << 24) for k in range(clusters)], np.uint32)
    return SimpleNamespace(packed=packed, shares=np.full(clusters, 1 / clusters, np.float32))


class FrameComputer:
    """Computes palettes of frames for one rank, keeping the tarballs it reads open.

    A frame is read in two steps: a bounded head, which must show a JPEG or PNG header whose pixels the
    member's size can hold (:func:`mpicolor.engine.decode.check_head`), then the rest; so no rank grows with what a
    tar header declares. A read that fails with one of `TRANSIENT_ERRORS` is tried again (`RETRY_DELAYS`);
    a read that still fails, or a tarball that is cut short or is no longer the version indexed, leaves the
    frame unread (pending for the next run) and the rest of the chunk with it.

    A GPU rank decodes a chunk's frames one by one on the CPU and computes their palettes in batches on its
    device (:class:`mpicolor.engine.gpu.GpuDevice`, opened at the first chunk), each batch within the device memory
    limit. Without a usable GPU there (no cuML for ``seed``, say) it computes on the CPU and says why once;
    any error of the device on a batch retries its frames one by one, and a frame that fails on the device
    again is computed on the CPU with a note.

    Parameters
    ----------
    config : RunConfig
        Clusters, method, seed, decode scale, pixel limit, and ``simulate``.
    backend : str
        ``"cpu"`` or ``"gpu"``: what this rank computes on, recorded per frame.
    rank : int
        This rank, for the results' accounting.
    device : int or None
        CUDA device of a GPU rank (``Placement.device``).
    gpu : mpicolor.engine.gpu.GpuDevice, optional
        An open backend to use instead of opening one on ``device`` (tests pass one running on NumPy).
    read : callable, default os.pread
        ``read(fd, length, offset) -> bytes``: how frames are read (tests pass one that fails).
    """

    def __init__(self, config, backend="cpu", rank=0, device=None, gpu=None, read=os.pread):
        self.config = config
        self.backend_code = BACKEND_CODES[backend]
        self.rank = rank
        self.device = device
        self.gpu = gpu
        self.read = read
        self.gpu_failures = 0  # frames in a row the device failed twice
        self.open_files = {}
        self.grid_buffers = {}  # upright frame shape -> a video frame's buffer for `_video_grid`

    def steps(self, chunk):
        """Compute a chunk one frame at a time.

        A generator: it yields after every frame (so that a coordinator can serve messages between frames) and
        returns the :class:`ChunkResult`. Each yield is the seconds the frame still owes: under ``--simulate``
        its cost, to be slept by whoever steps the generator (`compute` sleeps a chunk's once, so that a rank
        does not wake for every frame), else 0. A frame that cannot be decoded becomes a failure with its reason;
        it never ends the chunk. A frame that cannot be read (:class:`Unread`) leaves it and the rest of the
        chunk unread, and a tarball that changed since it was indexed leaves the whole chunk unread: what was
        read may mix two versions. A video's chunk is decoded segment by segment (`_video_frames`): a frame the
        decoder cannot give is a failure with its reason, a video that cannot be read leaves the whole chunk
        unread. On a GPU rank the yields come after every decode and the palettes are
        computed in batches.
        """
        started = time.perf_counter()
        n_frames = len(chunk.positions)
        clusters = self.config.clusters
        packed = np.zeros((n_frames, clusters), np.uint32)
        shares = np.zeros((n_frames, clusters), np.float32)
        failures, notes = {}, {}
        crops = np.zeros((n_frames, 4), np.uint16) if self.config.crop_borders else None
        gpu = self._gpu_backend()
        backend = np.full(n_frames, self.backend_code, np.uint8)
        positions = chunk.positions.tolist()
        images = {}  # frame index in the chunk -> decoded frame, waiting for the GPU batch
        held = 0  # device bytes the batch will take
        busy = 0.0
        simulated = self.config.simulate or 0.0
        cannot_read, unread_from = None, n_frames  # why, and from which frame on, the chunk is not read
        frames = self._video_frames(chunk) if chunk.segments else self._tarball_frames(chunk)
        for i, load in frames:
            position = positions[i]
            owed = 0.0
            with _frame_notes(notes, position):
                try:
                    frame = load()
                    if gpu is not None:
                        image, block = self._decode(frame, crops, i)
                        cost = gpu.frame_bytes(image)
                        if images and held + cost > gpu.batch_budget:
                            self._gpu_palettes(gpu, images, positions, notes, packed, shares, backend)
                            images, held = {}, 0
                        images[i] = image, block
                        held += cost
                    else:
                        palette = self._palette(frame, crops, i)
                        packed[i], shares[i], owed = palette.packed, palette.shares, simulated
                except BadFrame as error:
                    failures[position] = str(error)
                    backend[i] = FAILED
                except Unread as error:
                    # a video's frames come in the decoder's order, not the chunk's: none of them is kept
                    cannot_read, unread_from = str(error), 0 if chunk.segments else i
            # the time between yields is the coordinator's own: only the time spent here counts as busy
            busy += time.perf_counter() - started + owed
            if cannot_read is not None:
                break
            yield owed
            started = time.perf_counter()
        frames.close()  # a video's decoder, when the chunk ended early
        changed = self._change_since_indexed(chunk)
        if changed is not None:
            cannot_read, unread_from = changed, 0
        elif images:
            self._gpu_palettes(gpu, images, positions, notes, packed, shares, backend)
        unread = dict.fromkeys(positions[unread_from:], cannot_read)
        failures = {position: reason for position, reason in failures.items() if position not in unread}
        backend[unread_from:], packed[unread_from:], shares[unread_from:] = PENDING, 0, 0
        if crops is not None:
            crops[unread_from:] = 0
        notes = {position: "; ".join(dict.fromkeys(messages)) for position, messages in notes.items()
                 if messages and position not in failures and position not in unread}
        codes, counts = np.unique(backend[backend != PENDING], return_counts=True)
        stats = RankStats(n_frames - len(unread), busy + time.perf_counter() - started,
                          {BACKEND_NAMES[int(code)]: int(count) for code, count in zip(codes, counts)})
        return ChunkResult(chunk.chunk_id, chunk.tarball, chunk.positions, packed, shares, backend, failures, notes,
                           crops, unread, {self.rank: stats})

    def _tarball_frames(self, chunk):
        """``(i, load)`` for every frame of a tarball's chunk, in order: ``load()`` reads its bytes
        (`_frame_bytes`)."""
        for i, (offset, size) in enumerate(zip(chunk.offsets.tolist(), chunk.sizes.tolist())):
            yield i, functools.partial(self._frame_bytes, chunk.path, offset, size)

    def _video_frames(self, chunk):
        """``(i, load)`` for every frame of a video's chunk, as its segments' decoders deliver them: ``load()``
        gives the `DecodedFrame`, or raises `BadFrame` with the reason it could not be decoded, or `Unread`
        when the video could not be read at all (it changed or vanished since it was indexed)."""
        wanted = dict(zip(chunk.offsets.tolist(), range(len(chunk.offsets))))
        try:
            for segment in chunk.segments:
                for frame in read_segment(segment):
                    i = wanted.pop(frame.number, None)
                    if i is not None:
                        yield i, functools.partial(_decoded_or_bad, frame)
        except BadVideo as error:
            yield 0, functools.partial(_unread, f"cannot decode {chunk.path} ({error.reason})")
            return
        except OSError as error:
            yield 0, functools.partial(_unread, f"cannot read {chunk.path} ({_error_text(error)})")
            return
        for i in wanted.values():  # read_segment gives every frame of its segment; a frame is never lost silently
            yield i, functools.partial(_decoded_or_bad, FrameFailure(int(chunk.offsets[i]), 0.0,
                                                                     "no segment of its chunk delivered it"))

    def _frame_bytes(self, path, offset, size):
        """A frame's bytes: a head first, the rest only once :func:`~mpicolor.engine.decode.check_head` passes it.

        Raises
        ------
        BadFrame
            The head shows that the member is not a frame that may be read (the reason says why).
        Unread
            The bytes could not be read.
        """
        head = self._read(path, offset, min(size, HEAD_BYTES))
        while not check_head(head, size, self.config.max_pixels) and len(head) < size:
            head += self._read(path, offset + len(head), min(size, 2 * len(head)) - len(head))
        if len(head) == size:
            return head
        return b"".join((head, self._read(path, offset + len(head), size - len(head))))

    def _read(self, path, offset, length):
        """``length`` bytes at ``offset`` of the tarball at ``path``; errors that may pass are tried again."""
        try:
            # a stale NFS handle needs a new descriptor: every try after a failed one opens the file again
            return retried(lambda: read_member(self._descriptor(path), Member("", offset, length), self.read),
                           f"reading {path}", lambda: self._forget(path))
        except BadTarball as error:
            raise Unread(f"{path}: {error.reason}") from None
        except OSError as error:
            raise Unread(f"cannot read {path} ({_error_text(error)})") from None

    def _change_since_indexed(self, chunk):
        """Why the tarball this rank has open (the video it decoded) is not the one indexed, or None (also
        when none is open)."""
        if chunk.stamp is None:
            return None
        if chunk.segments:
            try:
                now = file_stamp(os.stat(chunk.path))
            except OSError as error:
                return f"cannot read {chunk.path} ({_error_text(error)})"
        else:
            fd = self.open_files.get(chunk.path)
            if fd is None:
                return None
            now = file_stamp(os.fstat(fd))
        if now == chunk.stamp:
            return None
        self._forget(chunk.path)
        if now[:2] != chunk.stamp[:2]:
            return f"{chunk.path} was replaced by another file since it was indexed"
        if now[2] != chunk.stamp[2]:
            return f"{chunk.path} changed size since it was indexed ({chunk.stamp[2]} -> {now[2]} bytes)"
        return f"{chunk.path} was modified since it was indexed"

    def _gpu_backend(self):
        """The open GPU backend of a GPU rank, None on the CPU; opening it fails over to the CPU once, loudly."""
        if self.backend_code != GPU or self.config.simulate is not None:
            return None
        if self.gpu is None:
            from mpicolor.engine.gpu import GpuDevice, GpuUnavailable
            try:
                self.gpu = GpuDevice(self.device, self.config.method, memory=self.config.gpu_memory)
            except Exception as error:  # whatever the device's path raises, the CPU computes
                why = error if isinstance(error, GpuUnavailable) else f"{type(error).__name__}: {error}"
                log.warning("GPU rank computing on the CPU: %s", why)
                self.backend_code = CPU
                return None
        return self.gpu

    def _gpu_palettes(self, gpu, images, positions, notes, packed, shares, backend):
        """Compute the palettes of decoded frames (``images``: index in the chunk -> frame and its chroma block, as
        `_decode` returns them) into the chunk's arrays: one batch on the device, the CPU for what the device fails."""
        clusters, seed = self.config.clusters, self.config.seed
        try:
            colours = gpu.colours([image for image, _ in images.values()], clusters, seed,
                                  [block for _, block in images.values()])
        except Exception as error:  # a CUDA, cuML or any other error of the device's path
            log.warning("GPU error on a batch of %d frames (%s: %s); retrying them one by one", len(images),
                        type(error).__name__, error)
            colours = [self._gpu_frame(gpu, decoded, positions[i], notes) for i, decoded in images.items()]
        for (i, (image, block)), frame_colours in zip(images.items(), colours):
            with _frame_notes(notes, positions[i]):
                if frame_colours is None:
                    palette, backend[i] = extract_palette(image, clusters, self.config.method, seed, block), CPU
                else:
                    palette, backend[i] = sorted_palette(*frame_colours, clusters), GPU
            packed[i], shares[i] = palette.packed, palette.shares

    def _gpu_frame(self, gpu, decoded, position, notes):
        # one frame (image, chroma block) on the device; on any error, None (the caller computes it on the CPU) and
        # a note
        if self.gpu is None:
            return None
        image, block = decoded
        try:
            frame_colours = gpu.colours([image], self.config.clusters, self.config.seed, [block])[0]
        except Exception as error:
            notes.setdefault(position, []).append(
                f"GPU error ({type(error).__name__}: {error}); computed on the CPU")
            self.gpu_failures += 1
            if self.gpu_failures >= MAX_GPU_FAILURES:
                log.warning("the GPU failed %d frames in a row; this rank computes on the CPU from now on",
                            self.gpu_failures)
                self.gpu, self.backend_code = None, CPU
            return None
        self.gpu_failures = 0
        return frame_colours

    def compute(self, chunk):
        """Compute a whole chunk and return its :class:`ChunkResult`."""
        steps = self.steps(chunk)
        owed = 0.0
        while True:
            try:
                owed += next(steps)
            except StopIteration as finished:
                if owed:  # simulated frames' cost (sleep(0) would still give the core away)
                    time.sleep(owed)
                return finished.value

    def _palette(self, frame, crops, i):
        """A frame's palette on the CPU (its crop, if any, into ``crops[i]``); ``frame``: a tarball frame's
        bytes, or a video's `DecodedFrame`."""
        if self.config.simulate is not None:  # the cost is slept by the caller of `steps`
            stand_in = frame if isinstance(frame, bytes) else frame.number.to_bytes(8, "little")
            return stand_in_palette(stand_in, self.config.clusters)
        if isinstance(frame, DecodedFrame) and crops is None and self.config.method == "fast":
            # the fast palette reads its sample grid only: only the grid is converted
            return extract_palette(self._video_grid(frame), self.config.clusters, "fast", self.config.seed)
        if crops is not None or isinstance(frame, DecodedFrame):
            image, block = self._decode(frame, crops, i)
            return extract_palette(image, self.config.clusters, self.config.method, self.config.seed, block)
        return palette_from_bytes(frame, clusters=self.config.clusters, method=self.config.method,
                                  seed=self.config.seed, scale=self.config.scale, max_pixels=self.config.max_pixels)

    def _decode(self, frame, crops, i):
        """A frame's BGR image and the block its decode repeated each chroma sample over (`repeated_chroma`): a
        tarball frame's bytes decoded, or a video frame converted whole by `mpicolor.engine.yuv.to_bgr` (the grid's
        pixels exactly; FFmpeg's chroma, which the palette does not rebuild: ``(1, 1)``). With ``crop_borders``,
        without its bars, which go into ``crops[i]``, and ``(1, 1)`` when a bar cuts through blocks (an odd top or
        left), whose pixels then do not start a block.
        """
        if isinstance(frame, DecodedFrame):
            self._check_video_size(frame)
            image = yuv.to_bgr(frame.pixel_format, frame.planes, frame.colorspace, frame.full_range, frame.rotation)
            block = (1, 1)
        else:
            scale, smooth = self._scale(), smooth_chroma(self.config.method)
            image = decode_frame(frame, max_pixels=self.config.max_pixels, scale=scale, smooth_chroma=smooth)
            block = repeated_chroma(frame, scale, smooth)
        if crops is None:
            return image, block
        crops[i] = detect_borders(image)
        top, _, left, _ = (int(side) for side in crops[i])
        if top % block[0] or left % block[1]:
            block = (1, 1)
        return crop(image, crops[i]), block

    def _video_grid(self, frame):
        """A video frame upright in a buffer kept per frame size, only the fast palette's sample converted
        (`mpicolor.engine.yuv.grid_to_bgr`): its palette is that of the whole frame converted by `to_bgr`."""
        self._check_video_size(frame)
        shape = yuv.upright_shape(*frame.planes[0].shape[:2], frame.rotation)
        if shape not in self.grid_buffers:
            if len(self.grid_buffers) >= 4:
                self.grid_buffers.pop(next(iter(self.grid_buffers)))
            self.grid_buffers[shape] = np.zeros((*shape, 3), np.uint8)
        return yuv.grid_to_bgr(frame.pixel_format, frame.planes, frame.colorspace, frame.full_range,
                               *sample_rows(*shape)[:3], frame.rotation, out=self.grid_buffers[shape])

    def _check_video_size(self, frame):
        height, width = frame.planes[0].shape[:2]
        if height * width > self.config.max_pixels:
            raise BadFrame(f"{width}x{height} = {height * width:,} pixels, more than max_pixels="
                           f"{self.config.max_pixels:,}")

    def _scale(self):
        return default_scale(self.config.method) if self.config.scale is None else self.config.scale

    def _descriptor(self, path):
        if path not in self.open_files:
            if len(self.open_files) >= 8:
                os.close(self.open_files.pop(next(iter(self.open_files))))
            self.open_files[path] = os.open(path, os.O_RDONLY)
        return self.open_files[path]

    def _forget(self, path):
        """Close this rank's descriptor of ``path``, if it has one: the next read opens the file again."""
        fd = self.open_files.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self):
        for fd in self.open_files.values():
            os.close(fd)
        self.open_files.clear()
