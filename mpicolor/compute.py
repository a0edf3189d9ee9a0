"""A rank's share of the work: read the bytes of assigned frames by offset and compute their palettes."""

import contextlib
import logging
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from mpicolor import store
from mpicolor.borders import crop, detect_borders
from mpicolor.decode import decode_frame
from mpicolor.palette import (BadFrame, default_scale, extract_palette, palette_from_bytes, smooth_chroma,
                              sorted_palette)
from mpicolor.tarballs import BadTarball, Member, index_tarball, read_member

log = logging.getLogger(__name__)

MAX_GPU_FAILURES = 3  # frames in a row the device fails before a GPU rank gives it up for the CPU


@dataclass
class Chunk:
    """Frames of one tarball assigned to one rank.

    Attributes
    ----------
    chunk_id : int
        Serial number, unique within a run.
    tarball : int
        The tarball's number in the run's sorted list.
    path : str
        The tarball's path, read by every rank (a shared file system carries the data, not rank 0).
    positions, offsets, sizes : ndarray of shape (n,), int64
        Frame positions in the tarball and where their bytes lie.
    """

    chunk_id: int
    tarball: int
    path: str
    positions: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray


@dataclass
class ChunkResult:
    """What a rank sends back for a :class:`Chunk`: arrays in the chunk's order plus failures by position."""

    chunk_id: int
    tarball: int
    positions: np.ndarray
    packed: np.ndarray
    shares: np.ndarray
    backend: np.ndarray
    failures: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    seconds: float = 0.0
    rank: int = 0
    crops: np.ndarray | None = None


@dataclass
class IndexedTarball:
    """A tarball's index as it travels to rank 0: arrays rather than one object per member.

    Attributes
    ----------
    number : int
        The tarball's number in the run's sorted list.
    path : str
    names : list of str, length n_frames
        Member names of the frames, in tar order.
    offsets, sizes : ndarray of shape (n_frames,), int64
        Where each frame's bytes lie.
    skipped : dict of str to int
    incomplete : str or None
        As in :class:`~mpicolor.tarballs.TarballIndex`.
    error : str or None
        Why the tarball cannot be read at all (then it has no frames).
    """

    number: int
    path: str
    names: list
    offsets: np.ndarray
    sizes: np.ndarray
    skipped: dict = field(default_factory=dict)
    incomplete: str | None = None
    error: str | None = None


def index_for_coordinator(number, path):
    """Index one tarball (on whichever rank rank 0 asks) into an :class:`IndexedTarball`."""
    try:
        index = index_tarball(path)
    except BadTarball as error:
        return IndexedTarball(number, path, [], np.zeros(0, np.int64), np.zeros(0, np.int64), error=error.reason)
    return IndexedTarball(number, path, [member.name for member in index.members],
                          np.array([member.offset for member in index.members], np.int64),
                          np.array([member.size for member in index.members], np.int64),
                          index.skipped, index.incomplete)


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

    A GPU rank decodes a chunk's frames one by one on the CPU and computes their palettes in one batch on
    its device (:class:`mpicolor.gpu.Backend`, opened at the first chunk). Without a usable GPU there (no
    cuML for ``seed``, say) it computes on the CPU and says why once; a device error on a batch retries its
    frames one by one, and a frame that fails on the device again is computed on the CPU with a note.

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
    gpu : mpicolor.gpu.Backend, optional
        An open backend to use instead of opening one on ``device`` (tests pass one running on NumPy).
    """

    def __init__(self, config, backend="cpu", rank=0, device=None, gpu=None):
        self.config = config
        self.backend_code = store.BACKEND_CODES[backend]
        self.rank = rank
        self.device = device
        self.gpu = gpu
        self.gpu_failures = 0  # frames in a row the device failed twice
        self.open_files = {}

    def steps(self, chunk):
        """Compute a chunk one frame at a time.

        A generator: it yields after every frame (so that rank 0 can serve messages between frames) and
        returns the :class:`ChunkResult`. A frame that cannot be read or decoded becomes a failure with its
        reason; it never ends the chunk. On a GPU rank the yields come after every decode and the palettes
        of the chunk are computed together at the end.
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
        try:
            fd = self._descriptor(chunk.path)
        except OSError as error:
            # the tarball vanished or lost its permissions after indexing: its frames fail, the rank goes on
            reason = f"cannot open {chunk.path}: {error.strerror}"
            failures = {position: reason for position in chunk.positions.tolist()}
            backend[:] = store.FAILED
            return ChunkResult(chunk.chunk_id, chunk.tarball, chunk.positions, packed, shares, backend, failures,
                               seconds=time.perf_counter() - started, rank=self.rank)
        images = {}  # frame index in the chunk -> decoded frame, waiting for the GPU batch
        busy = 0.0
        for i, (position, offset, size) in enumerate(zip(chunk.positions.tolist(), chunk.offsets.tolist(),
                                                         chunk.sizes.tolist())):
            with _frame_notes(notes, position):
                try:
                    frame_bytes = read_member(fd, Member("", offset, size))
                    if gpu is not None:
                        images[i] = self._decode(frame_bytes, crops, i)
                    else:
                        palette = self._palette(frame_bytes, crops, i)
                        packed[i], shares[i] = palette.packed, palette.shares
                except (BadFrame, OSError) as error:
                    failures[position] = str(error)
                    backend[i] = store.FAILED
            # the time between yields is rank 0's own: only the time spent here counts as busy
            busy += time.perf_counter() - started
            yield
            started = time.perf_counter()
        for i, palette, code in self._gpu_palettes(gpu, images, chunk.positions.tolist(), notes):
            packed[i], shares[i], backend[i] = palette.packed, palette.shares, code
        notes = {position: "; ".join(dict.fromkeys(messages)) for position, messages in notes.items()
                 if messages and position not in failures}
        return ChunkResult(chunk.chunk_id, chunk.tarball, chunk.positions, packed, shares, backend, failures,
                           notes, busy + time.perf_counter() - started, self.rank, crops)

    def _gpu_backend(self):
        """The open GPU backend of a GPU rank, None on the CPU; opening it fails over to the CPU once, loudly."""
        if self.backend_code != store.GPU or self.config.simulate is not None:
            return None
        if self.gpu is None:
            from mpicolor.gpu import Backend, GpuUnavailable
            try:
                self.gpu = Backend(self.device, self.config.method)
            except GpuUnavailable as error:
                log.warning("GPU rank computing on the CPU: %s", error)
                self.backend_code = store.CPU
                return None
        return self.gpu

    def _gpu_palettes(self, gpu, images, positions, notes):
        """Yield ``(index, palette, backend code)`` of decoded frames: one batch on the device, the CPU for what
        the device fails."""
        if not images:
            return
        clusters, seed = self.config.clusters, self.config.seed
        try:
            colours = gpu.colours(list(images.values()), clusters, seed)
        except gpu.errors as error:
            log.warning("GPU error on a batch of %d frames (%s: %s); retrying them one by one", len(images),
                        type(error).__name__, error)
            colours = [self._gpu_frame(gpu, image, positions[i], notes) for i, image in images.items()]
        for (i, image), frame_colours in zip(images.items(), colours):
            with _frame_notes(notes, positions[i]):
                if frame_colours is None:
                    yield i, extract_palette(image, clusters, self.config.method, seed), store.CPU
                else:
                    yield i, sorted_palette(*frame_colours, clusters), store.GPU

    def _gpu_frame(self, gpu, image, position, notes):
        # one frame on the device; on a device error, None (the caller computes it on the CPU) and a note
        if self.gpu is None:
            return None
        try:
            frame_colours = gpu.colours([image], self.config.clusters, self.config.seed)[0]
        except gpu.errors as error:
            notes.setdefault(position, []).append(
                f"GPU error ({type(error).__name__}: {error}); computed on the CPU")
            self.gpu_failures += 1
            if self.gpu_failures >= MAX_GPU_FAILURES:
                log.warning("the GPU failed %d frames in a row; this rank computes on the CPU from now on",
                            self.gpu_failures)
                self.gpu, self.backend_code = None, store.CPU
            return None
        self.gpu_failures = 0
        return frame_colours

    def compute(self, chunk):
        """Compute a whole chunk and return its :class:`ChunkResult`."""
        steps = self.steps(chunk)
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value

    def _palette(self, frame_bytes, crops, i):
        """A frame's palette on the CPU (its crop, if any, into ``crops[i]``)."""
        if self.config.simulate is not None:
            if self.config.simulate > 0:  # sleep(0) still yields the core: 50 us a frame
                time.sleep(self.config.simulate)
            return stand_in_palette(frame_bytes, self.config.clusters)
        if crops is not None:
            return extract_palette(self._decode(frame_bytes, crops, i), self.config.clusters, self.config.method,
                                   self.config.seed)
        return palette_from_bytes(frame_bytes, clusters=self.config.clusters, method=self.config.method,
                                  seed=self.config.seed, scale=self.config.scale, max_pixels=self.config.max_pixels)

    def _decode(self, frame_bytes, crops, i):
        """Decode a frame; with ``crop_borders``, without its bars, which go into ``crops[i]``."""
        image = decode_frame(frame_bytes, max_pixels=self.config.max_pixels, scale=self._scale(),
                             smooth_chroma=smooth_chroma(self.config.method))
        if crops is None:
            return image
        crops[i] = detect_borders(image)
        return crop(image, crops[i])

    def _scale(self):
        return default_scale(self.config.method) if self.config.scale is None else self.config.scale

    def _descriptor(self, path):
        if path not in self.open_files:
            if len(self.open_files) >= 8:
                os.close(self.open_files.pop(next(iter(self.open_files))))
            self.open_files[path] = os.open(path, os.O_RDONLY)
        return self.open_files[path]

    def close(self):
        for fd in self.open_files.values():
            os.close(fd)
        self.open_files.clear()
