"""The job's messages: what travels between rank 0, node coordinators and workers, each with its tag, its key
and its words for the log.

Orders go down (rank 0 to a node coordinator or a worker, a node coordinator to its workers): `Setup`,
`Chunk` (a chunk to compute; to a node coordinator, a *range* of many chunks), `IndexJob`, `SqliteJob`,
`Stop`. Replies go up: `ChunkResult` (to a node coordinator's coordinator, a batch of the results of a
range's chunks), `IndexedTarball`, `SqliteWritten`, and from a node coordinator `Cut` (a range is all handed
out in its node) and `Alive` (its node is computing but has nothing to return yet). A reply carries the `key` of
the order it answers, so that a coordinator's ledger knows what is still out; frame ids travel in the payload,
never in tags (only tags up to 32767 are guaranteed).
"""

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RankStats:
    """What one rank computed: frames, seconds computing, and frames per backend (``{"cpu": n, ...}``)."""

    frames: int = 0
    busy: float = 0.0
    backends: dict = field(default_factory=dict)

    def add(self, other):
        """Fold ``other`` (another RankStats) into this one."""
        self.frames += other.frames
        self.busy += other.busy
        for name, count in other.backends.items():
            self.backends[name] = self.backends.get(name, 0) + count


@dataclass
class Setup:
    """Rank 0's first word to every rank: the run's settings, or the exit status of a run that cannot start."""

    config: object = None
    failed: int | None = None


@dataclass
class Stop:
    """The run is over: end with ``status``."""

    status: int


@dataclass
class Chunk:
    """Frames of one data set to compute: a chunk for a worker, or a range of chunks for a node coordinator.

    A video's chunk is a run of whole segments (`segments`): every cut of it, by rank 0 or a node
    coordinator, falls between two of them (`cut`, `part`), so that no frame is decoded twice and each
    segment's decoder starts where it must.

    Attributes
    ----------
    chunk_id : int
        Unique among the orders of the rank that sent it.
    tarball : int
        The data set's number in the run's sorted list.
    path : str
        The data set's path, read by every rank (a shared file system carries the data, not the coordinators).
    positions, offsets, sizes : ndarray of shape (n,), int64
        Frame positions in the data set, ascending, and where their bytes lie in a tarball; in a video,
        ``offsets`` are the frames' numbers in the video (``sizes`` unused, 0).
    stamp : tuple or None
        The tarball's file stamp when it was indexed (`mpicolor.job.worker.file_stamp`): frames read from
        another version of it are not kept.
    last : bool
        Nothing is left to hand out after it: a node coordinator then cuts what it holds finer, so that the
        ranks of its node finish together.
    segments : tuple of mpicolor.state.videos.Segment
        A video's: what a rank decodes, in order; each covers a run of the chunk's frames (empty for a
        tarball).
    """

    chunk_id: int
    tarball: int
    path: str
    positions: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    stamp: tuple | None = None
    last: bool = False
    segments: tuple = ()

    @property
    def key(self):
        return ("chunk", self.chunk_id)

    def cut(self, start, length):
        """Where a piece of at least ``length`` frames from frame ``start`` (indices into `positions`) ends:
        ``start + length`` for a tarball, the end of the segment holding that frame for a video, and never
        beyond the chunk."""
        stop = min(start + length, len(self.positions))
        if not self.segments or stop == len(self.positions):
            return stop
        firsts = self._segment_firsts()
        return int(firsts[np.searchsorted(firsts, stop)]) if stop <= firsts[-1] else len(self.positions)

    def part(self, start, stop):
        """Frames ``[start, stop)`` (indices into `positions`, cut by `cut`) as a chunk of their own, with
        their segments; ``chunk_id`` and ``last`` as this one's."""
        firsts = self._segment_firsts()
        kept = tuple(segment for segment, first in zip(self.segments, firsts.tolist()) if start <= first < stop)
        return dataclasses.replace(self, positions=self.positions[start:stop], offsets=self.offsets[start:stop],
                                   sizes=self.sizes[start:stop], segments=kept)

    def _segment_firsts(self):
        """The index in `positions` of each segment's first frame."""
        return np.searchsorted(self.offsets, [segment.start for segment in self.segments]).astype(np.int64)

    def words(self):
        frames = len(self.positions)
        return f"chunk {self.chunk_id} ({frames} frame{'s' * (frames != 1)} of {os.path.basename(self.path)})"


@dataclass
class ChunkResult:
    """The results of a `Chunk`, or of part of a range: arrays in the order of ``positions``.

    ``failures`` are the frames' own (not an image, corrupt): final. ``unread`` are frames that could not be
    read for a reason that is not theirs (the tarball changed or vanished, an I/O error that persisted), by
    position: they stay pending (backend ``PENDING``) for the next run.

    Attributes
    ----------
    chunk_id, tarball : int
        Those of the chunk or range answered.
    positions : ndarray of shape (n,), int64
    packed : ndarray of shape (n, clusters), uint32
    shares : ndarray of shape (n, clusters), float32
    backend : ndarray of shape (n,), uint8
    failures, notes, unread : dict of int to str
        By position.
    crops : ndarray of shape (n, 4), uint16, or None
    stats : dict of int to RankStats
        What each rank that computed these frames did for them.
    last : bool
        False for a node coordinator's interim batch of a range still being computed.
    cpu : float or None
        A node coordinator's processor seconds so far (what coordinating its node costs it).
    """

    chunk_id: int
    tarball: int
    positions: np.ndarray
    packed: np.ndarray
    shares: np.ndarray
    backend: np.ndarray
    failures: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    crops: np.ndarray | None = None
    unread: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    last: bool = True
    cpu: float | None = None

    @property
    def key(self):
        return ("chunk", self.chunk_id)

    @property
    def seconds(self):
        """Seconds of computing these frames took, summed over the ranks."""
        return sum(stats.busy for stats in self.stats.values())

    @classmethod
    def merged(cls, chunk_id, tarball, parts, last, cpu):
        """One result of ``parts`` (ChunkResults of one tarball), as a node coordinator returns a range's."""
        stats = {}
        for part in parts:
            for rank, work in part.stats.items():
                stats.setdefault(rank, RankStats()).add(work)
        crops = None if parts[0].crops is None else np.concatenate([part.crops for part in parts])
        return cls(chunk_id, tarball, np.concatenate([part.positions for part in parts]),
                   np.concatenate([part.packed for part in parts]), np.concatenate([part.shares for part in parts]),
                   np.concatenate([part.backend for part in parts]),
                   {k: v for part in parts for k, v in part.failures.items()},
                   {k: v for part in parts for k, v in part.notes.items()}, crops,
                   {k: v for part in parts for k, v in part.unread.items()}, stats, last, cpu)


@dataclass
class IndexJob:
    """Index tarball ``number`` at ``path`` (answered by an `IndexedTarball`)."""

    number: int
    path: str

    @property
    def key(self):
        return ("index", self.number)

    def words(self):
        return f"the indexing of {os.path.basename(self.path)}"


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
        As in :class:`~mpicolor.state.tarballs.TarballIndex`.
    error : str or None
        Why the tarball cannot be read at all (then it has no frames).
    fingerprint : mpicolor.state.tarballs.Fingerprint or None
        What tells whether stored results belong to this tarball (None when it cannot be read).
    stamp : tuple or None
        The tarball's file stamp, taken before it was indexed.
    seconds : ndarray of shape (n_frames,), float64, or None
        A video's frames' times; None for a tarball.
    video : mpicolor.state.videos.VideoIndex or None
        A video's index, from which rank 0 cuts segments; None for a tarball.
    """

    number: int
    path: str
    names: list
    offsets: np.ndarray
    sizes: np.ndarray
    skipped: dict = field(default_factory=dict)
    incomplete: str | None = None
    error: str | None = None
    fingerprint: object = None
    stamp: tuple | None = None
    seconds: np.ndarray | None = None
    video: object = None

    @property
    def key(self):
        return ("index", self.number)


@dataclass
class SqliteJob:
    """Write the sqlite file of tarball ``name`` from its checkpoint file (answered by a `SqliteWritten`)."""

    name: str

    @property
    def key(self):
        return ("sqlite", self.name)

    def words(self):
        return f"the sqlite file of {self.name}"


@dataclass
class SqliteWritten:
    """The sqlite file of ``name`` is written, or could not be (``error``: why)."""

    name: str
    error: str | None = None

    @property
    def key(self):
        return ("sqlite", self.name)


@dataclass
class Cut:
    """A node coordinator's word that every frame of range ``chunk_id`` is handed to the ranks of its node, so that
    its coordinator sends the next: a node holds one range not yet cut, and what rank 0 still has to hand out
    goes to whichever node runs short first (what makes all nodes finish together)."""

    chunk_id: int

    @property
    def key(self):
        return ("chunk", self.chunk_id)


@dataclass
class Alive:
    """A node coordinator's word that its node is computing though it has no result to return yet, or that it
    gave up on ranks of its node (``lost``: rank -> why); ``cpu`` as in `ChunkResult`."""

    lost: dict = field(default_factory=dict)
    cpu: float | None = None
    key = None


ORDERS = (Chunk, IndexJob, SqliteJob)
REPLIES = (ChunkResult, IndexedTarball, SqliteWritten, Cut, Alive)
# one MPI tag per kind of message: what an MPI trace or a debugger shows
TAGS = {kind: tag for tag, kind in enumerate((Setup, Stop, *ORDERS, *REPLIES), start=11)}
