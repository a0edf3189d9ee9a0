"""The scheduling policy of a coordinator, and the ledger of what each peer holds: pure, tested in process.

:class:`Schedule` decides how many frames a chunk or a range holds and how far ahead tarballs are indexed,
from the number of ranks and the measured cost of a frame alone. :class:`WorkerLedger` remembers what each
peer was sent and since when it has been silent, for ``--stall-timeout``.
"""

import math
import time
from dataclasses import dataclass

# A chunk should take about this long: short enough that ranks of different speed finish together, long
# enough that its coordinator is not flooded with messages when frames are cheap.
CHUNK_SECONDS = 0.25
# A node coordinator's range should take its node about this long: rank 0 then hears from a node a few times
# a range (its batches), whatever the node's size.
RANGE_SECONDS = 10.0
MAX_CHUNK = 4096
# tarballs being indexed by workers at once, at least (more with more ranks)
INDEXING_AHEAD = 4
# units of work per rank to have indexed ahead
UNITS_AHEAD = 4


@dataclass
class Schedule:
    """How much work to cut, and how far to index ahead.

    Parameters
    ----------
    size : int
        Ranks computing in the run (coordinators included when they compute).
    unit_seconds : float
        What one peer's unit of work should take: `CHUNK_SECONDS` for a rank, `RANGE_SECONDS` for a node.
    frame_seconds : float or None
        The running mean cost of a frame on one rank; None until a result came back.
    """

    size: int
    unit_seconds: float = CHUNK_SECONDS
    frame_seconds: float | None = None

    def observe(self, frames, seconds):
        """Fold a result's cost (``seconds`` of computing, summed over its ranks) into the running mean (new
        results weigh a fifth: costs drift, not jump)."""
        if frames:
            cost = seconds / frames
            self.frame_seconds = cost if self.frame_seconds is None else 0.8 * self.frame_seconds + 0.2 * cost

    def _unit_frames(self, capacity):
        """Frames a peer computing with ``capacity`` ranks gets through in `unit_seconds`, at most `MAX_CHUNK`
        a rank per `CHUNK_SECONDS` (frames of no cost would otherwise make units of millions)."""
        most = MAX_CHUNK * capacity * self.unit_seconds / CHUNK_SECONDS
        return int(min(self.unit_seconds * capacity / max(self.frame_seconds, 1e-9), most))

    def work_length(self, capacity, unassigned, tail):
        """Frames in the next unit of work of a peer computing with ``capacity`` ranks.

        Parameters
        ----------
        capacity : int
            1 for a rank, its node's computing ranks for a node coordinator.
        unassigned : int
            Frames indexed and not yet handed out.
        tail : bool
            True when nothing is left to index: then what is left is split so that all ranks finish together
            (each peer takes at most its share of half of it; a node, still a chunk for each of its ranks, or
            the range would leave some of them idle and cost rank 0 messages that gain nothing).
        """
        length = capacity if self.frame_seconds is None else self._unit_frames(capacity)
        if tail:
            share = math.ceil(unassigned * capacity / (2 * self.size))
            fewest = (capacity * int(CHUNK_SECONDS / max(self.frame_seconds, 1e-9))
                      if self.unit_seconds > CHUNK_SECONDS and self.frame_seconds else 1)
            length = min(length, max(share, fewest))
        return max(1, length)

    def frames_ahead(self):
        """Frames to have indexed ahead: a few units per rank (indexing everything upfront would stall start)."""
        return UNITS_AHEAD * self.size * max(1, int(self.unit_seconds / max(self.frame_seconds, 1e-6))
                                             if self.frame_seconds else 1)

    def indexing_at_once(self):
        """Tarballs workers may index at the same time."""
        return max(INDEXING_AHEAD, self.size)


class WorkerLedger:
    """What each peer (a worker, or a node coordinator) holds, and how long it has been silent: its coordinator's
    view for ``--stall-timeout``.

    Work is keyed by the order's ``key`` (`mpicolor.job.protocol`), which its reply carries. A peer's silence is
    counted from its last message, or from the moment it was handed work while idle. The ledger keeps the
    peers that hold fewer than ``depth`` orders apart (`first_hungry`), so that handing out work never walks
    every peer.

    Parameters
    ----------
    workers : iterable of int
        The ranks the coordinator hands work to.
    depth : int
        Orders each peer should hold: the one it works on and those waiting behind it.
    clock : callable
        Monotonic seconds.
    """

    def __init__(self, workers, depth, clock=time.monotonic):
        self.clock = clock
        self.depth = depth
        self.held = {rank: {} for rank in workers}
        self.counted = {rank: set() for rank in self.held}  # the held orders that count toward depth
        self.since = {rank: clock() for rank in self.held}
        self.short = dict.fromkeys(sorted(self.held))  # peers holding fewer than depth counted orders
        self.lost = set()

    def ranks(self):
        """The peers still in the run."""
        return self.held.keys()

    def first_hungry(self):
        """The lowest peer that holds fewer than ``depth`` orders, or None."""
        return next(iter(self.short), None)

    def count(self, rank):
        return len(self.held[rank])

    def _recount(self, rank):
        if len(self.counted[rank]) < self.depth:
            self.short[rank] = None
        else:
            self.short.pop(rank, None)

    def least_loaded(self):
        return min(self.held, key=self.count)

    def hand(self, rank, key, work):
        """Record that ``rank`` was sent ``work``."""
        if not self.held[rank]:
            self.since[rank] = self.clock()
        self.held[rank][key] = work
        self.counted[rank].add(key)
        self._recount(rank)

    def returned(self, rank, key, last=True):
        """Record ``rank``'s answer for ``key`` (``last``: the order is done; an interim batch or a sign of life
        only resets the silence); False for an answer of a peer given up on (to be dropped)."""
        if rank in self.lost:
            return False
        self.since[rank] = self.clock()
        if last and key is not None:
            del self.held[rank][key]
            self.counted[rank].discard(key)
            self._recount(rank)
        return True

    def released(self, rank, key):
        """``rank`` passed all of order ``key`` on (a node coordinator's `Cut`): it still holds it, but the
        order no longer counts toward ``depth``."""
        if rank not in self.lost:
            self.counted[rank].discard(key)
            self._recount(rank)

    def idle(self):
        """True when no peer holds anything."""
        return not any(self.held.values())

    def stalled(self, timeout):
        """``(rank, seconds silent, oldest work)`` of every peer that holds work and has been silent longer than
        ``timeout`` seconds."""
        now = self.clock()
        return [(rank, now - self.since[rank], next(iter(held.values())))
                for rank, held in self.held.items() if held and now - self.since[rank] > timeout]

    def lose(self, rank):
        """Give up on ``rank``: it gets no more work, its late answers are dropped; returns the work it held."""
        self.lost.add(rank)
        del self.since[rank], self.counted[rank]
        self.short.pop(rank, None)
        return list(self.held.pop(rank).values())
