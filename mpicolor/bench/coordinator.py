"""``mpicolor bench coordinator``: rank 0's real code at 10 to 1,000 nodes, the nodes simulated on a virtual clock.

Rank 0 is what runs: the :class:`~mpicolor.job.coordinator.Coordinator` and its
:class:`~mpicolor.job.dispatch.Dispatcher`, organised for the job's layout by
:func:`~mpicolor.job.dispatch.root_dispatcher`, every message pickled both ways as MPI would. Each node
coordinator is a model (:class:`SimulatedNode`): its ranks compute a range at ``ranks / cost`` frames a second,
it says ``Cut`` when the last chunks of a range are handed out, returns a batch of results every
`~mpicolor.job.dispatch.FLUSH_SECONDS` and a last one at the range's end, indexes a data set in
``INDEX_SECONDS`` and writes a sqlite file in ``SQLITE_SECONDS``.

The clock is virtual, and rank 0's own processor time moves it: every pass of rank 0's loop advances it by
the processor seconds the pass took, so that a rank 0 that cannot keep up delays its answers as it would on
a cluster. Disk writes are not made: each checkpoint save is charged the writer's processor time per frame,
measured at start-up by saving a real data set (``writer_cpu_per_frame``), and that charge moves the clock
too (the writer's thread shares rank 0's interpreter).

A run of a billion frames has more results than this process can record in an afternoon, so a run longer
than ``--window`` simulated seconds is measured over its first ``--window`` seconds (rank 0's processor time,
messages, memory), and its tail (from the first node idle to the last result) over a run of the same nodes
with as many frames as ``--window`` seconds hold: what makes the tail, ranges shrinking to the nodes' last
chunks, does not depend on how long the run was before it.
"""

import heapq
import json
import multiprocessing
import os
import pickle
import resource
import shutil
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from mpicolor.job.config import RunConfig
from mpicolor.job.coordinator import Coordinator
from mpicolor.job.dispatch import FLUSH_SECONDS, STALL_CHECK, root_dispatcher
from mpicolor.job.protocol import (
    Chunk,
    ChunkResult,
    Cut,
    IndexedTarball,
    IndexJob,
    RankStats,
    SqliteJob,
    SqliteWritten,
)
from mpicolor.job.schedule import CHUNK_SECONDS, RANGE_SECONDS, UNITS_AHEAD
from mpicolor.state.checkpoint import Checkpoint
from mpicolor.state.results import COMPLETE, CPU, TarballResults
from mpicolor.state.writer import StateWriter

# the original collection: 11.1 million frames in data sets of this size
FRAMES_PER_SET = 44_470
# what a rank takes to index a data set and to write its sqlite file (a 44,470-frame tarball here)
INDEX_SECONDS, SQLITE_SECONDS = 1.0, 1.0
CLUSTERS = 5
# what rank 0 holds per frame indexed and not yet computed (its name, offsets, results), and how much of that a
# simulation may hold here: more is reported, not simulated
BYTES_PER_INDEXED_FRAME, MEMORY_LIMIT = 150, 8e9
# every simulated data set's index (what rank 0 receives is unpickled anew each time)
NAMES = [f"frame_{position + 1:07d}.jpg" for position in range(FRAMES_PER_SET)]
OFFSETS = np.arange(FRAMES_PER_SET, dtype=np.int64) * 20_480
SIZES = np.full(FRAMES_PER_SET, 20_000, np.int64)


def add_coordinator_arguments(parser):
    parser.add_argument("--nodes", default="10,100,1000", help="node counts, comma-separated (default 10,100,1000)")
    parser.add_argument("--ranks-per-node", type=int, default=160, help="ranks of a node (default 160)")
    parser.add_argument("--cost", type=float, default=0.006, help="seconds a frame costs a rank (default 0.006)")
    parser.add_argument("--frames", default="11100000,1110000000",
                        help="frames of the run, comma-separated (default 11100000,1110000000: the original's "
                             "collection, and a hundred of them); each runs at every node count")
    parser.add_argument("--window", type=float, default=300.0,
                        help="simulated seconds measured of a longer run (default 300); see the module's text")
    parser.add_argument("--out", default="bench-out/coordinator", help="folder of the table (coordinator.json)")


class VirtualClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class SimChannel:
    """Rank 0's end of the simulated network: what it sends is pickled (its cost is rank 0's) and given to the
    nodes' models; what the models send is pickled outside rank 0's time and unpickled in :meth:`poll`."""

    def __init__(self):
        self.inbox, self.outbox = deque(), []
        self.received = self.sent = self.bytes_received = 0

    def poll(self):
        if not self.inbox:
            return None
        source, data = self.inbox.popleft()
        self.received += 1
        self.bytes_received += len(data)
        return source, pickle.loads(data)

    def send(self, rank, message):
        self.sent += 1
        self.outbox.append((rank, pickle.dumps(message, protocol=5)))

    def progress(self):
        pass

    def drop(self, rank):
        pass

    def flush(self):
        pass


class SimulatedNode:
    """A node coordinator and its ranks, as rank 0 sees them: the times of their answers."""

    def __init__(self, rank, ranks, cost):
        self.rank, self.ranks, self.cost = rank, ranks, cost
        self.free_at = 0.0          # when its ranks have computed everything they were given
        self.peers = range(rank, rank + ranks)

    def answers(self, now, message):
        """(time, reply) pairs the node sends rank 0 for ``message``; a reply is a message, or a ``(chunk,
        begin, end, last)`` batch made when it is due (a billion frames of batches made ahead would not fit)."""
        if isinstance(message, IndexJob):
            return [(now + INDEX_SECONDS, IndexedTarball(message.number, message.path, NAMES, OFFSETS, SIZES))]
        if isinstance(message, SqliteJob):
            return [(now + SQLITE_SECONDS, SqliteWritten(message.name))]
        if not isinstance(message, Chunk):
            return []
        frames = len(message.positions)
        start = max(now, self.free_at)
        end = start + frames * self.cost / self.ranks
        self.free_at = end
        # rank 0 hears Cut once the range's last chunks are handed out: the node's ranks hold two chunks each
        answers = [(max(start, end - 2 * CHUNK_SECONDS), Cut(message.chunk_id))]
        done, flush = 0, start + FLUSH_SECONDS
        while done < frames:
            at = min(flush, end)
            upto = frames if at >= end else int(frames * (at - start) / (end - start))
            if upto > done:
                answers.append((at, (message, done, upto, at >= end)))
                done = upto
            flush += FLUSH_SECONDS
        return answers

    def batch(self, chunk, begin, end, last):
        """The results of frames ``begin:end`` of range ``chunk``, as the node coordinator merges them."""
        frames = end - begin
        share, extra = divmod(frames, self.ranks)
        stats = {}
        for index, peer in enumerate(self.peers):
            counted = share + (index < extra)
            stats[peer] = RankStats(counted, counted * self.cost, {"cpu": counted})
        return ChunkResult(chunk.chunk_id, chunk.tarball, chunk.positions[begin:end],
                           np.zeros((frames, CLUSTERS), np.uint32), np.zeros((frames, CLUSTERS), np.float32),
                           np.full(frames, CPU, np.uint8), stats=stats, last=last, cpu=0.0)


class MeasuredWriter(StateWriter):
    """The writer without the disk: each save is charged ``per_frame`` processor seconds per frame of the data
    sets it saves (what a real save cost, per frame), in ``charged``."""

    def __init__(self, per_frame, *args):
        super().__init__(*args)
        self.per_frame, self.charged = per_frame, 0.0

    def _write(self, changed, sqlite_names, index):
        self.charged += self.per_frame * sum(len(results.frames) for results in changed)
        self.times.add(0.0, 0.0)
        return [results.name for results in changed if results.status == COMPLETE]

    def submit(self, changed, sqlite_names, index=True):
        self.saved_complete += self._write(changed, sqlite_names, index)

    def busy(self):
        return False


def writer_cpu_per_frame(folder):
    """Processor seconds a real checkpoint save costs per frame: the median of three saves of a complete
    data set of `FRAMES_PER_SET` frames."""
    results = TarballResults.empty("measured.tar", NAMES, CLUSTERS)
    results.record(np.arange(FRAMES_PER_SET), np.zeros((FRAMES_PER_SET, CLUSTERS), np.uint32),
                   np.zeros((FRAMES_PER_SET, CLUSTERS), np.float32), np.full(FRAMES_PER_SET, CPU, np.uint8), {})
    results.settle()
    costs = []
    for attempt in range(3):
        output = os.path.join(folder, f"save{attempt}")
        os.makedirs(output)
        checkpoint = Checkpoint(output)
        checkpoint.open()
        started = time.process_time()
        checkpoint.save({"label": "bench"}, [results], folder)
        costs.append((time.process_time() - started) / FRAMES_PER_SET)
    return sorted(costs)[1]


def simulate(nodes, ranks_per_node, cost, frames, window, folder, per_frame):
    """One simulated run; its numbers as a dict."""
    sets = max(1, round(frames / FRAMES_PER_SET))
    input_dir, output_dir = os.path.join(folder, f"in-{sets}"), os.path.join(folder, f"out-{nodes}-{sets}")
    if not os.path.isdir(input_dir):
        os.makedirs(input_dir)
        for number in range(sets):
            open(os.path.join(input_dir, f"set{number:06d}.tar"), "wb").close()
    shutil.rmtree(output_dir, ignore_errors=True)
    size = nodes * ranks_per_node
    layout = [tuple(range(node * ranks_per_node, (node + 1) * ranks_per_node)) for node in range(nodes)]
    clock = VirtualClock()
    config = RunConfig(input_dir, output_dir, simulate=cost, split=(1, 0), progress="log")
    coordinator = Coordinator(config, size, delegate_indexing=True, clock=clock)
    coordinator.writer = MeasuredWriter(per_frame, coordinator.checkpoint, output_dir, coordinator.settings,
                                        input_dir)
    coordinator.open_run()
    channel = SimChannel()
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    root = root_dispatcher(channel, coordinator, None, size, [layout[rank // ranks_per_node] for rank in range(size)],
                           ["simulated"] * size, clock=clock)
    models = {peer: SimulatedNode(peer, capacity, cost) for peer, capacity in root.capacities.items()}
    events, sequence = [], 0
    coordinator.start_clocks()
    cpu = 0.0
    while not root.done() and clock.now < window:
        started, charged = time.thread_time(), coordinator.writer.charged
        busy = root.step()
        spent = time.thread_time() - started + coordinator.writer.charged - charged
        cpu += spent
        clock.now += spent  # rank 0's time passes while it works: what it sends leaves after that
        for rank, data in channel.outbox:
            for at, answer in models[rank].answers(clock.now, pickle.loads(data)):
                heapq.heappush(events, (at, sequence, rank, answer))
                sequence += 1
        channel.outbox.clear()
        if not busy and not channel.inbox:
            # rank 0 waits: for the next answer, or its next check or save
            clock.now = max(clock.now, min(events[0][0] if events else clock.now + STALL_CHECK,
                                           clock.now + STALL_CHECK))
        while events and events[0][0] <= clock.now:
            _, _, rank, answer = heapq.heappop(events)
            if isinstance(answer, tuple):
                answer = models[rank].batch(*answer)
            channel.inbox.append((rank, pickle.dumps(answer, protocol=5)))
    finished = root.done()
    simulated = clock.now
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before
    if finished:
        coordinator.close_run()
    else:
        coordinator.writer.close()
        coordinator._release()
    # the tail: from the first node out of work for good to the last result
    ends = [model.free_at for model in models.values()]
    first_idle, last_result = min(ends), max(ends)
    work = (None if coordinator.last_result is None or not finished
            else coordinator.last_result - coordinator.first_handed)
    return {"nodes": nodes, "ranks": size, "frames": frames, "data_sets": sets, "simulated_s": simulated,
            "work_s": work,
            "finished": finished, "ideal_s": sets * FRAMES_PER_SET * cost / (size - 1),
            "rank0_cpu_s": cpu, "rank0_busy": cpu / simulated if simulated else 0.0,
            "messages_per_s": (channel.sent + channel.received) / simulated if simulated else 0.0,
            "mb_received_per_s": channel.bytes_received / simulated / 1e6 if simulated else 0.0,
            "peak_memory_mb": peak / 1024, "frames_done": coordinator.frames_done,
            "first_idle_s": first_idle, "last_result_s": last_result,
            "tail_s": None if first_idle is None or not finished else last_result - first_idle}


def in_child(*arguments):
    """`simulate` in a child process of its own, so that its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(simulate, *arguments).result()


def run_coordinator_bench(args):
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mpicolor-coordinator-") as folder:
        per_frame = writer_cpu_per_frame(folder)
        print(f"a checkpoint save measured here: {per_frame * 1e9:.0f} ns of processor time per frame "
              "(charged to rank 0 instead of writing)", file=sys.stderr, flush=True)
        for frames in (int(text) for text in args.frames.split(",")):
            for nodes in (int(text) for text in args.nodes.split(",")):
                ahead = min(frames, UNITS_AHEAD * nodes * args.ranks_per_node * RANGE_SECONDS / args.cost)
                if ahead * BYTES_PER_INDEXED_FRAME > MEMORY_LIMIT:
                    print(f"  {nodes} nodes, {frames} frames: not simulated: rank 0 would hold {ahead:.3g} frames "
                          f"indexed ahead, about {ahead * BYTES_PER_INDEXED_FRAME / 1e9:.0f} GB",
                          file=sys.stderr, flush=True)
                    rows.append({"nodes": nodes, "frames": frames, "skipped": "rank 0's index ahead would need "
                                 f"{ahead * BYTES_PER_INDEXED_FRAME / 1e9:.0f} GB"})
                    continue
                run_seconds = frames * args.cost / (nodes * args.ranks_per_node - 1)
                row = in_child(nodes, args.ranks_per_node, args.cost, frames, args.window, folder, per_frame)
                if not row["finished"]:
                    # the tail from a run of the same nodes holding `window` seconds of work
                    short = in_child(nodes, args.ranks_per_node, args.cost,
                                     int(args.window / 2 * nodes * args.ranks_per_node / args.cost), args.window * 2,
                                     folder, per_frame)
                    row["tail_s"] = short["tail_s"]
                row["run_s"] = run_seconds
                row["tail_share"] = None if row["tail_s"] is None else row["tail_s"] / run_seconds
                rows.append(row)
                print(f"  {nodes} nodes, {frames} frames: rank 0 {row['rank0_busy']:.1%} busy over "
                      f"{row['simulated_s']:.0f} simulated s", file=sys.stderr, flush=True)
    print(f"\nrank 0 at {args.ranks_per_node} ranks a node, {args.cost * 1000:g} ms a frame (simulated nodes; "
          f"disk writes charged {per_frame * 1e9:.0f} ns/frame)")
    print(f"{'nodes':>5s} {'frames':>13s} {'ideal s':>8s} {'work s':>7s} {'measured s':>10s} {'rank 0 busy':>11s} "
          f"{'msgs/s':>8s} {'MB/s in':>8s} {'peak MB':>8s} {'tail s':>7s} {'tail':>6s}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['nodes']:5d} {row['frames']:13d}  not simulated: {row['skipped']}")
            continue
        work = "-" if row["work_s"] is None else f"{row['work_s']:.1f}"
        tail = "-" if row["tail_s"] is None else f"{row['tail_s']:.1f}"
        share = "-" if row["tail_share"] is None else f"{row['tail_share']:.2%}"
        print(f"{row['nodes']:5d} {row['frames']:13d} {row['run_s']:8.1f} {work:>7s} {row['simulated_s']:10.0f} "
              f"{row['rank0_busy']:11.1%} {row['messages_per_s']:8.0f} {row['mb_received_per_s']:8.1f} "
              f"{row['peak_memory_mb']:8.0f} {tail:>7s} {share:>6s}")
    with open(os.path.join(args.out, "coordinator.json"), "w") as stream:
        json.dump({"writer_cpu_per_frame": per_frame, "rows": rows}, stream, indent=1)
    return 0
