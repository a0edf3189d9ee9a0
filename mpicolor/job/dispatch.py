"""The loops of a run over a channel: a coordinator's (rank 0's, or a node coordinator's) and a worker's.

No MPI here: :class:`mpicolor.job.mpi.MpiChannel` carries the messages under ``mpiexec``, and
:class:`LocalChannel` between objects of one process, so that the loops are tested, and rank 0's is
benchmarked (``mpicolor bench coordinator``), without ``mpiexec``. A channel has ``poll()`` (one waiting
message as ``(source, message)``, or None), ``send(rank, message)`` (never blocks), ``progress()`` (completes
what it can of the sends) and ``drop(rank)`` (forget the sends to a rank that will never receive them).

Every coordinator runs the same :class:`Dispatcher` over a *planner* that makes its decisions: rank 0's
:class:`~mpicolor.job.coordinator.Coordinator`, or a node coordinator's :class:`NodePlanner`. A node
coordinator looks like a worker to rank 0 (it takes orders and answers them) and like rank 0 to the ranks of
its node, as a Work Queue foreman does.
"""

import dataclasses
import logging
import pickle
import time
from collections import deque
from dataclasses import dataclass, field

from mpicolor.job.protocol import Alive, Chunk, ChunkResult, Cut, Stop
from mpicolor.job.schedule import RANGE_SECONDS, Schedule, WorkerLedger
from mpicolor.job.tiers import capacity, coordinator_computes, rank_0_peers, ranks_text
from mpicolor.job.worker import answer

log = logging.getLogger(__name__)

# orders a peer holds: the one it works on and one waiting behind it, so that none waits for its next
DEPTH = 2
# Back-off of the polling loops, from the first idle pass to the longest sleep: MPICH's blocking receive spins a
# core, which would starve the others. A poll costs 20 us of processor time or more (100 us on 2 cores shared by
# 256 ranks), so 250 ranks waiting on 2 cores at 5 ms would take one of them; at 50 ms they take 5%, and no peer
# waits for its coordinator's answer, since it holds its next chunk, or range, while it computes one.
POLL_MIN, POLL_MAX = 0.001, 0.05
# seconds between checks for stalled peers
STALL_CHECK = 0.5
# seconds between a node coordinator's interim batches of the ranges its node computes: what rank 0's
# checkpoint lags behind the node, and what sets rank 0's messages (a range is RANGE_SECONDS of a node's work)
FLUSH_SECONDS = 5.0


class Dispatcher:
    """A coordinator's loop: one named step per concern, run in turn by :meth:`step`.

    As mpi4py.futures' manager loop: it never blocks (it polls, and sleeps with a back-off when idle), keeps
    every peer `DEPTH` orders ahead, and tracks in a :class:`~mpicolor.job.schedule.WorkerLedger` what each
    holds. A peer silent longer than ``stall_timeout`` with work in hand is given up on: its work goes to the
    others, its late answers are dropped, and it gets nothing more. A pass costs what its messages cost: it
    walks no peer when nothing happened.

    Parameters
    ----------
    channel : channel
        See the module's docstring.
    planner : Coordinator or NodePlanner
        What to hand out and what to do with the answers (see :meth:`step`).
    capacities : dict of int to int
        Every peer and the ranks it computes with (1 for a worker, its node's for a node coordinator).
    computer : mpicolor.job.worker.FrameComputer or None
        This rank's own, when it computes frames between messages.
    describe : callable
        ``describe(rank)`` -> words for the log, e.g. ``"rank 3 on node7"``.
    stall_timeout : float
        Seconds of silence with work in hand before a peer is given up on.
    interrupted : mpicolor.job.mpi.Interrupted or None
        Rank 0's: an interrupting signal ends the loop after a last checkpoint.
    depth : int
        Orders each peer holds ahead: `DEPTH` chunks for a worker; one range not yet cut for a node coordinator,
        which says `Cut` when it has handed a range out.
    clock : callable
        Monotonic seconds.
    """

    def __init__(self, channel, planner, capacities, computer=None, describe=str, stall_timeout=600.0,
                 interrupted=None, depth=DEPTH, clock=time.monotonic):
        self.channel, self.planner, self.capacities, self.computer = channel, planner, capacities, computer
        self.describe, self.stall_timeout, self.interrupted, self.clock = describe, stall_timeout, interrupted, clock
        self.ledger = WorkerLedger(capacities, depth, clock)
        self.own = None               # this rank's own chunk in progress (a generator of its frames)
        self.next_stall_check = clock() + STALL_CHECK
        self.status = None            # the exit status once the loop ended early (an interruption)
        if not capacities:
            planner.serve_alone()

    def serve(self):
        """Run :meth:`step` until the planner is done, sleeping with a back-off while nothing happens.

        Returns
        -------
        int or None
            The exit status when an interruption ended the loop (the last checkpoint is written), else None.
        """
        pause = POLL_MIN
        while not self.done():
            if self.step():
                pause = POLL_MIN
            else:
                time.sleep(pause)
                pause = min(4 * pause, POLL_MAX)
        return self.status

    def done(self):
        return self.status is not None or (self.planner.finished and self.own is None and self.ledger.idle())

    def stop_peers(self, status):
        """Tell every peer still in the run to end with ``status``, and wait until that is sent."""
        for rank in self.ledger.ranks():
            self.channel.send(rank, Stop(status))
        self.channel.flush()

    def step(self):
        """One pass: take in messages, hand out work, complete sends, stop if interrupted, give up on stalled
        peers, let the planner keep time, compute a frame of this rank's own; True when something happened."""
        busy = self.receive()
        self.hand_out()
        self.channel.progress()
        if self.stop_if_interrupted():
            return True
        self.give_up_on_stalled()
        self.planner.tick()
        if not busy:
            busy = self.compute_own_frame()
        return busy

    def receive(self):
        """Take in every waiting message; True when there was one."""
        busy = False
        while (received := self.channel.poll()) is not None:
            source, message = received
            busy = True
            if source not in self.capacities:
                self.planner.order(source, message)  # a node coordinator's orders, from rank 0
            elif isinstance(message, Cut):
                self.ledger.released(source, message.key)
            elif self.ledger.returned(source, message.key, getattr(message, "last", True)):
                self.planner.answered(source, message)
            # else: the late answer of a peer given up on: its work was handed to others
        return busy

    def _send(self, rank, order):
        self.channel.send(rank, order)
        self.ledger.hand(rank, order.key, order, counts=isinstance(order, Chunk))

    def hand_out(self):
        """Give the least loaded peer the jobs that are due (indexing first: what the chunks come from), then
        keep every peer its depth of orders ahead, the lowest first. With nothing to hand out this asks the planner
        once, whatever the number of peers."""
        if self.ledger.ranks():
            while (job := self.planner.next_job()) is not None:
                self._send(self.ledger.least_loaded(), job)
        while (rank := self.ledger.first_hungry()) is not None:
            chunk = self.planner.next_chunk(self.capacities[rank])
            if chunk is None:
                break
            self._send(rank, chunk)

    def stop_if_interrupted(self):
        """After an interrupting signal: the planner's last checkpoint, and the loop ends with its status."""
        if self.interrupted is None or self.interrupted.signal is None:
            return False
        self.status = self.planner.interrupt(f"interrupted by {self.interrupted.signal}")
        return True

    def give_up_on_stalled(self):
        """Give up on every peer silent for longer than the stall timeout (checked every `STALL_CHECK` s)."""
        if self.clock() < self.next_stall_check:
            return
        self.next_stall_check = self.clock() + STALL_CHECK
        for rank, silent, work in self.ledger.stalled(self.stall_timeout):
            self.planner.rank_lost(rank, f"{self.describe(rank)} held {work.words()} for {silent:.0f} s without "
                                         f"answering (--stall-timeout {self.stall_timeout:g})", self.ledger.lose(rank))
            self.channel.drop(rank)  # a send a stuck rank never receives never completes
            if not self.ledger.ranks():
                self.planner.serve_alone()

    def compute_own_frame(self):
        """One frame of this rank's own chunk, when it computes and no message waits (coordinating comes
        first); True when it computed one."""
        if self.computer is None:
            return False
        if self.own is None:
            chunk = self.planner.next_chunk(1)
            if chunk is None:
                return False
            self.own = self.computer.steps(chunk)
        try:
            owed = next(self.own)
            if owed:  # a simulated frame's cost (sleep(0) would still give the core away)
                time.sleep(owed)
        except StopIteration as finished:
            self.planner.answered(None, finished.value)
            self.own = None
        return True


@dataclass
class RangeWork:
    """A range a node coordinator took, and what of it came back."""

    chunk: Chunk
    source: int
    cursor: int = 0
    returned: int = 0
    parts: list = field(default_factory=list)

    def unassigned(self):
        return len(self.chunk.positions) - self.cursor


class NodePlanner:
    """A node coordinator's decisions: the ranges it was sent, cut into chunks for its node; their results,
    returned in batches; index and sqlite orders, passed on to a rank of its node.

    A range's results go back to whoever sent it: at once when the range is complete, and as interim batches
    every `FLUSH_SECONDS` while it is computed, so that rank 0's checkpoint lags by a second, not by a range.
    A node coordinator whose node holds work but has nothing to return for a while says `Alive`, so that rank
    0 can tell a slow node from a stuck one; it reports the ranks of its node it gave up on the same way.

    Parameters
    ----------
    send : callable
        ``send(rank, message)``: the channel's.
    coordinator : int
        The rank this node coordinator answers (rank 0), to which it says it is alive.
    size : int
        The ranks of the node that compute (this one included when it computes).
    computer : mpicolor.job.worker.FrameComputer
        For index and sqlite orders when no rank of the node is left to take them.
    rank : int
        This node coordinator's rank, for its lost ranks' numbers.
    stall_timeout : float
        Rank 0's; a node says it is alive well within it.
    clock : callable
        Monotonic seconds.
    process_time : callable
        This process's processor seconds; those spent since this planner began are sent with every batch (the
        benchmarks' node coordinator cost).
    """

    def __init__(self, send, coordinator, size, computer, stall_timeout=600.0, clock=time.monotonic,
                 process_time=time.process_time):
        self.send, self.coordinator, self.computer = send, coordinator, computer
        self.clock, self.process_time = clock, process_time
        self.cpu_started = process_time()
        self.schedule = Schedule(size)
        self.ranges = {}            # (source, range id) -> RangeWork
        self.cutting = deque()      # the ranges with frames not yet handed out
        self.owner = {}             # chunk id -> its range's key
        self.reclaimed = deque()    # chunks of a lost rank, handed out again first
        self.jobs = deque()         # (source, IndexJob or SqliteJob) waiting for a rank of the node
        self.relayed = {}           # job key -> the rank that sent the job
        self.lost = {}              # ranks given up on, not yet reported
        self.alone = False          # no rank of the node is left: index and sqlite orders are done here
        self.draining = False       # rank 0 sent the job's last range: what is held is all there is
        self.next_chunk_id = 0
        self.heartbeat = max(min(stall_timeout / 4, 30.0), FLUSH_SECONDS)
        self.last_flush = self.last_sent = clock()
        self.stopped = None

    @property
    def finished(self):
        return self.stopped is not None

    def cpu_spent(self):
        return self.process_time() - self.cpu_started

    def order(self, source, message):
        """Take an order from ``source`` (rank 0): a range, a job for a rank of the node, or Stop."""
        if isinstance(message, Stop):
            self.stopped = message
        elif isinstance(message, Chunk):
            key = (source, message.chunk_id)
            self.ranges[key] = RangeWork(message, source)
            self.cutting.append(key)
            self.draining |= message.last
        else:
            self.jobs.append((source, message))

    def next_chunk(self, capacity):
        """The next chunk for a rank of the node (``capacity``: 1), or None."""
        if self.reclaimed:
            chunk = self.reclaimed.popleft()
            return self._numbered(chunk, self.owner.pop(chunk.chunk_id))
        while self.cutting and self.ranges[self.cutting[0]].unassigned() == 0:
            self.cutting.popleft()
        if not self.cutting:
            return None
        work = self.ranges[self.cutting[0]]
        # once nothing more will come, what the node holds is split so that its ranks finish it together
        unassigned = sum(self.ranges[key].unassigned() for key in self.cutting) if self.draining else 0
        length = min(self.schedule.work_length(capacity, unassigned, self.draining), work.unassigned())
        whole, start = work.chunk, work.cursor
        work.cursor = whole.cut(start, length)  # a video's range is cut between its segments
        if work.unassigned() == 0:
            self.send(work.source, Cut(whole.chunk_id))
        return self._numbered(dataclasses.replace(whole.part(start, work.cursor), last=False), self.cutting[0])

    def _numbered(self, chunk, key):
        """``chunk`` under this node's next chunk id, remembered as part of range ``key``."""
        chunk = dataclasses.replace(chunk, chunk_id=self.next_chunk_id)
        self.next_chunk_id += 1
        self.owner[chunk.chunk_id] = key
        return chunk

    def next_job(self):
        """An index or sqlite order for the least loaded rank of the node, or None."""
        if not self.jobs:
            return None
        source, job = self.jobs.popleft()
        self.relayed[job.key] = source
        return job

    def answered(self, rank, message):
        """Take a rank's answer: a chunk's results join its range's; a job's answer goes back to its sender."""
        if not isinstance(message, ChunkResult):
            self.send(self.relayed.pop(message.key), message)
            self.last_sent = self.clock()
            return
        key = self.owner.pop(message.chunk_id)
        work = self.ranges[key]
        self.schedule.observe(len(message.positions) - len(message.unread), message.seconds)
        work.parts.append(message)
        work.returned += len(message.positions)
        if work.returned == len(work.chunk.positions):
            del self.ranges[key]
            if key in self.cutting:  # all cut, not yet passed over by next_chunk
                self.cutting.remove(key)
            self._return(work, last=True)

    def _return(self, work, last):
        """Send what came back of a range since its last batch (``last``: the range is complete)."""
        batch = ChunkResult.merged(work.chunk.chunk_id, work.chunk.tarball, work.parts, last, self.cpu_spent())
        work.parts = []
        self.send(work.source, batch)
        self.last_sent = self.clock()

    def rank_lost(self, rank, why, work):
        """A rank of the node stopped answering: its chunks go to the others first, its jobs to another rank,
        and rank 0 hears of it with the next batch or sign of life."""
        log.error("rank %d %s; it gets no more work, and what it held goes to other ranks of its node", rank, why)
        self.lost[rank] = why
        for order in work:
            if isinstance(order, Chunk):
                self.reclaimed.append(order)
            else:
                self.jobs.appendleft((self.relayed.pop(order.key), order))

    def serve_alone(self):
        """No rank of the node is left: do its index and sqlite orders here, and compute (the dispatcher does)."""
        self.alone = True

    def tick(self):
        """Return interim batches every `FLUSH_SECONDS`; report lost ranks; say the node is alive when it holds
        work but sent nothing for a while; do the jobs no rank is left for."""
        now = self.clock()
        if now - self.last_flush >= FLUSH_SECONDS:
            self.last_flush = now
            for work in self.ranges.values():
                if work.parts:
                    self._return(work, last=False)
        if self.lost or (self.ranges and now - self.last_sent >= self.heartbeat):
            self.send(self.coordinator, Alive(self.lost, self.cpu_spent()))
            self.lost, self.last_sent = {}, now
        while self.alone and (job := self.next_job()) is not None:
            self.answered(None, answer(self.computer, job))


class LocalNetwork:
    """The mailboxes of ranks living in one process: what :class:`LocalChannel` delivers through.

    Every message is pickled on the way, as MPI would, so that no rank shares an object with another (and a
    benchmark pays what serialising costs).
    """

    def __init__(self):
        self.boxes = {}

    def channel(self, rank):
        return LocalChannel(self, rank)


class LocalChannel:
    """One rank's end of a :class:`LocalNetwork`."""

    def __init__(self, network, rank):
        self.network, self.rank = network, rank
        self.box = network.boxes.setdefault(rank, deque())
        self.dropped = set()

    def poll(self):
        return (self.box[0][0], pickle.loads(self.box.popleft()[1])) if self.box else None

    def send(self, rank, message):
        if rank not in self.dropped:
            self.network.boxes.setdefault(rank, deque()).append((self.rank, pickle.dumps(message, protocol=5)))

    def progress(self):
        pass

    def drop(self, rank):
        self.dropped.add(rank)

    def flush(self):
        pass


def root_dispatcher(channel, coordinator, computer, size, nodes, hosts, interrupted=None, clock=time.monotonic):
    """Rank 0's dispatcher over ``coordinator``, organised for the job's layout: flat, or across nodes.

    Parameters
    ----------
    channel : channel
    coordinator : mpicolor.job.coordinator.Coordinator
    computer : mpicolor.job.worker.FrameComputer
        Rank 0's own, used when it computes.
    size : int
    nodes : list of tuple of int
        Every rank's node (its ranks, ascending).
    hosts : list of str
        Every rank's host, for the log.
    interrupted : mpicolor.job.mpi.Interrupted, optional
    clock : callable
        Monotonic seconds (the coordinator benchmark's are virtual).
    """
    capacities, node_of = rank_0_peers(size, nodes)
    config = coordinator.config
    if node_of:
        coordinator.organise(sum(capacities.values()), RANGE_SECONDS, node_of)
        log.info("%d ranks on %d nodes: rank 0 hands ranges to the node coordinators (ranks %s)", size, len(node_of),
                 ranks_text(capacities))

        def describe(peer):
            return f"rank {peer} (node coordinator of ranks {ranks_text(node_of[peer])}) on {hosts[peer]}"
        own, depth = None, 1
    else:
        own, depth = computer if coordinator_computes(len(capacities)) else None, DEPTH
        coordinator.organise(len(capacities) + (own is not None))

        def describe(peer):
            return f"rank {peer} on {hosts[peer]}"
    return Dispatcher(channel, coordinator, capacities, own, describe, config.stall_timeout, interrupted, depth,
                      clock)


def node_dispatcher(channel, computer, mine, stall_timeout, host):
    """A node coordinator's dispatcher (``mine``: its `mpicolor.job.tiers.Role`) over a `NodePlanner`."""
    planner = NodePlanner(channel.send, mine.coordinator, capacity(mine), computer, stall_timeout)
    return Dispatcher(channel, planner, dict.fromkeys(mine.peers, 1), computer if mine.computes else None,
                      lambda peer: f"rank {peer} on {host}", stall_timeout)


class Worker:
    """A worker: answers the orders of its coordinator (computes chunks, indexes tarballs, writes sqlite files)
    until it says stop."""

    def __init__(self, channel, computer, coordinator):
        self.channel, self.computer, self.coordinator = channel, computer, coordinator
        self.status = None  # the exit status the stop carried, once it came

    def step(self):
        """Answer one waiting order; True when there was one."""
        received = self.channel.poll()
        if received is None:
            return False
        order = received[1]
        if isinstance(order, Stop):
            self.channel.flush()
            self.status = order.status
        else:
            self.channel.send(self.coordinator, answer(self.computer, order))
        return True


def work(channel, computer, coordinator):
    """A worker's loop (see `Worker`), sleeping with a back-off while no order waits; returns the exit status."""
    worker = Worker(channel, computer, coordinator)
    pause = POLL_MIN
    while worker.status is None:
        if worker.step():
            pause = POLL_MIN
        else:
            time.sleep(pause)
            pause = min(2 * pause, POLL_MAX)
    return worker.status
