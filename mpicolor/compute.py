"""A rank's share of the work: read the bytes of assigned frames by offset and compute their palettes."""

import logging
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from mpicolor import store
from mpicolor.palette import BadFrame, palette_from_bytes
from mpicolor.tarballs import Member, read_member

log = logging.getLogger(__name__)


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

    Parameters
    ----------
    config : RunConfig
        Clusters, method, seed, decode scale, pixel limit, and ``simulate``.
    backend : str
        ``"cpu"`` or ``"gpu"``: what this rank computes on, recorded per frame.
    rank : int
        This rank, for the results' accounting.
    """

    def __init__(self, config, backend="cpu", rank=0):
        self.config = config
        self.backend_code = store.BACKEND_CODES[backend]
        self.rank = rank
        self.open_files = {}

    def steps(self, chunk):
        """Compute a chunk one frame at a time.

        A generator: it yields after every frame (so that rank 0 can serve messages between frames) and
        returns the :class:`ChunkResult`. A frame that cannot be read or decoded becomes a failure with its
        reason; it never ends the chunk.
        """
        started = time.perf_counter()
        n_frames = len(chunk.positions)
        clusters = self.config.clusters
        packed = np.zeros((n_frames, clusters), np.uint32)
        shares = np.zeros((n_frames, clusters), np.float32)
        backend = np.full(n_frames, self.backend_code, np.uint8)
        failures, notes = {}, {}
        try:
            fd = self._descriptor(chunk.path)
        except OSError as error:
            # the tarball vanished or lost its permissions after indexing: its frames fail, the rank goes on
            reason = f"cannot open {chunk.path}: {error.strerror}"
            failures = {position: reason for position in chunk.positions.tolist()}
            backend[:] = store.FAILED
            return ChunkResult(chunk.chunk_id, chunk.tarball, chunk.positions, packed, shares, backend, failures,
                               seconds=time.perf_counter() - started, rank=self.rank)
        for i, (position, offset, size) in enumerate(zip(chunk.positions.tolist(), chunk.offsets.tolist(),
                                                         chunk.sizes.tolist())):
            with warnings.catch_warnings(record=True) as caught:
                # a library's warning belongs to the frame's record, not to an 11-million-line log
                warnings.simplefilter("always")
                try:
                    palette = self._palette(fd, Member("", offset, size))
                except (BadFrame, OSError) as error:
                    failures[position] = str(error)
                    backend[i] = store.FAILED
                else:
                    packed[i], shares[i] = palette.packed, palette.shares
            if caught and position not in failures:
                notes[position] = "; ".join(dict.fromkeys(str(warning.message) for warning in caught))
            yield
        return ChunkResult(chunk.chunk_id, chunk.tarball, chunk.positions, packed, shares, backend, failures,
                           notes, time.perf_counter() - started, self.rank)

    def compute(self, chunk):
        """Compute a whole chunk and return its :class:`ChunkResult`."""
        steps = self.steps(chunk)
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value

    def _palette(self, fd, member):
        frame_bytes = read_member(fd, member)
        if self.config.simulate is not None:
            time.sleep(self.config.simulate)
            return stand_in_palette(frame_bytes, self.config.clusters)
        return palette_from_bytes(frame_bytes, clusters=self.config.clusters, method=self.config.method,
                                  seed=self.config.seed, scale=self.config.scale, max_pixels=self.config.max_pixels)

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
