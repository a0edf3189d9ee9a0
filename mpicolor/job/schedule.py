"""The scheduling policy of rank 0, and the ledger of what each worker holds: pure, tested in process.

:class:`Schedule` decides how many frames a chunk holds and how far ahead tarballs are indexed, from the
number of ranks and the measured cost of a frame alone. :class:`WorkerLedger` remembers what each worker was
sent and since when it has been silent, for ``--stall-timeout``.
"""

import math
import time
from dataclasses import dataclass

# A chunk should take about this long: short enough that ranks of different speed finish together, long
# enough that rank 0 is not flooded with messages when frames are cheap.
CHUNK_SECONDS = 0.25
MAX_CHUNK = 4096
# tarballs being indexed by workers at once, at least (more with more ranks)
INDEXING_AHEAD = 4
# chunks' worth of frames per rank to have indexed ahead
CHUNKS_AHEAD = 4


@dataclass
class Schedule:
    """How much work to cut, and how far to index ahead.

    Parameters
    ----------
    size : int
        Ranks computing (rank 0 included when it computes).
    frame_seconds : float or None
        The running mean cost of a frame; None until a chunk came back.
    """

    size: int
    frame_seconds: float | None = None

    def observe(self, frames, seconds):
        """Fold a chunk's cost into the running mean (new chunks weigh a fifth: costs drift, not jump)."""
        if frames:
            cost = seconds / frames
            self.frame_seconds = cost if self.frame_seconds is None else 0.8 * self.frame_seconds + 0.2 * cost

    def _frames_per_chunk(self):
        return int(CHUNK_SECONDS / max(self.frame_seconds, 1e-6))

    def chunk_length(self, unassigned, tail):
        """Frames in the next chunk.

        Parameters
        ----------
        unassigned : int
            Frames indexed and not yet handed out.
        tail : bool
            True when nothing is left to index: then what is left is split so that all ranks finish together.
        """
        length = 1 if self.frame_seconds is None else self._frames_per_chunk()
        if tail:
            length = min(length, math.ceil(unassigned / (2 * self.size)))
        return max(1, min(length, MAX_CHUNK))

    def frames_ahead(self):
        """Frames to have indexed ahead: a few chunks per rank (indexing everything upfront would stall start)."""
        return CHUNKS_AHEAD * self.size * max(1, self._frames_per_chunk() if self.frame_seconds else 1)

    def indexing_at_once(self):
        """Tarballs workers may index at the same time."""
        return max(INDEXING_AHEAD, self.size)


class WorkerLedger:
    """What each worker holds, and how long it has been silent: rank 0's view for ``--stall-timeout``.

    Work is keyed by ``("chunk", chunk_id)`` or ``("index", tarball number)``: the ids that come back in a
    :class:`~mpicolor.job.worker.ChunkResult` or :class:`~mpicolor.job.worker.IndexedTarball`. A worker's silence is
    counted from its last answer, or from the moment it was handed work while idle.

    Parameters
    ----------
    workers : iterable of int
        The ranks rank 0 hands work to.
    clock : callable
        Monotonic seconds.
    """

    def __init__(self, workers, clock=time.monotonic):
        self.clock = clock
        self.held = {rank: {} for rank in workers}
        self.since = {rank: clock() for rank in self.held}
        self.lost = set()

    def ranks(self):
        """The workers still in the run, ascending."""
        return sorted(self.held)

    def count(self, rank):
        return len(self.held[rank])

    def least_loaded(self):
        return min(self.held, key=self.count)

    def hand(self, rank, key, work):
        """Record that ``rank`` was sent ``work``."""
        if not self.held[rank]:
            self.since[rank] = self.clock()
        self.held[rank][key] = work

    def returned(self, rank, key):
        """Record ``rank``'s answer for ``key``; False for an answer of a rank given up on (to be dropped)."""
        if rank in self.lost:
            return False
        self.held[rank].pop(key)
        self.since[rank] = self.clock()
        return True

    def idle(self):
        """True when no worker holds anything."""
        return not any(self.held.values())

    def stalled(self, timeout):
        """``(rank, seconds silent, oldest work)`` of every worker that holds work and has been silent longer than
        ``timeout`` seconds."""
        now = self.clock()
        return [(rank, now - self.since[rank], next(iter(held.values())))
                for rank, held in self.held.items() if held and now - self.since[rank] > timeout]

    def lose(self, rank):
        """Give up on ``rank``: it gets no more work, its late answers are dropped; returns the work it held."""
        self.lost.add(rank)
        del self.since[rank]
        return list(self.held.pop(rank).values())


