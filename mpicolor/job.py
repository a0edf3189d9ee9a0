"""The coordinator of a run (rank 0's bookkeeping) and the serial twin of the MPI dispatch.

Plain Python with no MPI: :mod:`mpicolor.mpi` moves chunks and results between ranks and calls the
:class:`Coordinator` for every decision, and :func:`run_serial` drives the same coordinator in one
process, so that the whole pipeline is testable without ``mpiexec``.
"""

import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mpicolor import store
from mpicolor.compute import Chunk, FrameComputer, index_for_coordinator
from mpicolor.progress import Progress, format_duration
from mpicolor.tarballs import find_tarballs

log = logging.getLogger(__name__)

# exit status of `mpicolor run`
EXIT_OK, EXIT_TARBALL_FAILED, EXIT_USAGE, EXIT_OUTPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4

# A chunk should take about this long: short enough that ranks of different speed finish together, long
# enough that rank 0 is not flooded with messages when frames are cheap.
CHUNK_SECONDS = 0.25
MAX_CHUNK = 4096
# a tarball's end checkpoints at once, unless the last checkpoint is younger than this: then the next tick
# does, for every tarball ended meanwhile (an fsynced checkpoint per tarball would cap rank 0 at a few
# dozen tarballs per second)
TARBALL_CHECKPOINT_GAP = 1.0
# tarballs being indexed by workers at once, at least (more with more ranks)
INDEXING_AHEAD = 4
# failed frames logged one by one per tarball; the rest are counted, so that a broken data set of 10,000
# frames makes a readable log (every reason is in the failures table)
FAILURES_LOGGED = 5


@dataclass
class RankStats:
    """What one rank did: frames, seconds computing, and frames per backend."""

    frames: int = 0
    busy: float = 0.0
    backends: dict = field(default_factory=dict)


@dataclass
class ActiveTarball:
    """A tarball being computed: its results, its frames' places, and the frames not yet handed out."""

    number: int
    path: str
    results: store.TarballResults
    offsets: np.ndarray
    sizes: np.ndarray
    pending: np.ndarray
    cursor: int = 0
    outstanding: int = 0
    failures_logged: int = 0
    stamp: tuple | None = None
    unread: str | None = None  # why frames of it could not be read: it ends incomplete, they stay pending

    def unassigned(self):
        return len(self.pending) - self.cursor


class Coordinator:
    """Rank 0's view of a run: what to compute next, what is done, when to checkpoint.

    Parameters
    ----------
    config : RunConfig
    size : int
        Number of ranks computing (rank 0 included when it computes).
    delegate_indexing : bool
        Let workers index tarballs (:meth:`index_job`, :meth:`indexed`): at thousands of frames per second
        indexing would take most of rank 0's time. Rank 0 still indexes when it has nothing to hand out.
    clock : callable
        Monotonic seconds, replaceable in tests.
    """

    def __init__(self, config, size, delegate_indexing=False, clock=time.monotonic):
        self.config = config
        self.size = size
        self.delegate_indexing = delegate_indexing
        self.indexing = set()        # numbers of tarballs a worker is indexing
        self.clock = clock
        self.settings = dict(config.result_settings(), label=config.label, version=config.version)
        self.checkpoint = store.Checkpoint(config.output_dir)
        self.lock = store.OutputLock(config.output_dir)
        self.todo = deque()          # (number, path) of tarballs not yet indexed
        self.active = {}             # number -> ActiveTarball
        self.stored = {}             # name -> TarballResults from the checkpoint, reused when the frames match
        self.dirty = {}              # name -> TarballResults changed since the last checkpoint
        self.unwritten = []          # complete tarballs whose sqlite file waits for the next checkpoint
        self.outcomes = {}           # number -> (name, status, frames, failures, reason)
        self.paths = []
        self.rank_stats = {}
        self.next_chunk_id = 0
        self.frames_done = 0
        self.frames_known = 0
        self.frame_seconds = None    # running mean cost of a frame, for chunk sizes
        self.started = clock()
        self.cpu_started = time.process_time()
        self.last_checkpoint = self.started
        self.progress = None

    # ---- start ----------------------------------------------------------------------------------------
    def start(self):
        """Find the tarballs, lock OUTPUT_DIR, read the checkpoint; raise ValueError for a bad INPUT_DIR,
        OutputError or OSError for an OUTPUT_DIR that cannot be used."""
        try:
            paths, rejected = find_tarballs(self.config.input_dir)
        except (FileNotFoundError, NotADirectoryError) as error:
            raise ValueError(f"INPUT_DIR: {error}") from None
        store.prepare_output_dir(self.config.output_dir)
        self.lock.acquire()
        store.remove_stale_temporaries(self.config.output_dir)
        settings, self.stored = self.checkpoint.load()
        if settings is not None:
            self._check_resumable(settings)
        self.paths = paths + [path for path, _ in rejected]
        if not self.paths:
            log.warning("INPUT_DIR %s holds no tarballs (*.tar): nothing to do", self.config.input_dir)
        for path, reason in rejected:
            self._unreadable(len(self.outcomes), path, reason)
        skipped = 0
        for number, path in enumerate(paths, start=len(rejected)):
            if self._already_done(number, path):
                skipped += 1
            else:
                self.todo.append((number, path))
        log.info("%d tarballs in %s: %d already done, %d to compute", len(self.paths), self.config.input_dir,
                 skipped, len(self.todo))

    def begin(self):
        """Start the clocks once every rank is ready, so that Python and MPI start-up stay out of the numbers."""
        self.started = self.last_checkpoint = self.clock()
        self.cpu_started = time.process_time()
        self.progress = Progress(len(self.paths), clock=self.clock, mode=self.config.progress)

    def _check_resumable(self, stored):
        asked = self.settings
        differ = [key for key in asked if key != "version" and stored.get(key) != asked[key]]
        if differ:
            was = ", ".join(f"{key}={stored.get(key)!r}" for key in differ)
            now = ", ".join(f"{key}={asked[key]!r}" for key in differ)
            raise store.OutputError(
                f"{self.config.output_dir} holds results made with {was}; this run asks for {now}. Resume with "
                f"the same settings, or start over in a new OUTPUT_DIR (or remove {store.CHECKPOINT}, "
                f"{store.CHECKPOINT_PREV} and the hist_*.sqlite files from this one)")

    def _already_done(self, number, path):
        name = os.path.basename(path)
        sqlite_path = os.path.join(self.config.output_dir, store.sqlite_name(name, self.config.label))
        stored = self.stored.get(name)
        if stored is not None and stored.status == store.COMPLETE:
            if not os.path.exists(sqlite_path):
                # the job ended between the checkpoint and the sqlite file: write it from the checkpoint
                store.write_sqlite(self.config.output_dir, self.config.label, stored, self.settings)
            self._finished_outcome(number, stored)
            return True
        if os.path.exists(sqlite_path):
            log.info("%s already done (%s exists), skipping", name, os.path.basename(sqlite_path))
            self.outcomes[number] = (name, store.COMPLETE, 0, 0, "done before this checkpoint; not re-read")
            return True
        return False

    # ---- assignment -----------------------------------------------------------------------------------
    def next_chunk(self):
        """The next chunk to compute, or None when every frame is handed out."""
        if not self.delegate_indexing:
            while self.todo and self._unassigned() < self._wanted():
                self._open(*self.todo.popleft())
        elif self.todo and self._unassigned() == 0:
            self._open(*self.todo.popleft())  # nothing to hand out: index here rather than wait for a worker
        for tarball in self.active.values():
            if tarball.unassigned() > 0:
                return self._cut(tarball)
        return None

    def index_job(self):
        """``(number, path)`` of a tarball for a worker to index when more frames will be wanted soon, else None."""
        if (self.delegate_indexing and self.todo and len(self.indexing) < max(INDEXING_AHEAD, self.size)
                and self._unassigned() < self._wanted()):
            number, path = self.todo.popleft()
            self.indexing.add(number)
            return number, path
        return None

    def _unassigned(self):
        return sum(tarball.unassigned() for tarball in self.active.values())

    def _wanted(self):
        """Frames to have indexed ahead: a few chunks per rank (indexing everything upfront would stall start)."""
        return 4 * self.size * max(1, int(CHUNK_SECONDS / max(self.frame_seconds or 1.0, 1e-6)))

    def _chunk_length(self):
        if self.frame_seconds is None:
            length = 1
        else:
            length = int(CHUNK_SECONDS / max(self.frame_seconds, 1e-6))
        if not self.todo and not self.indexing:
            # the tail: split what is left so that all ranks finish together
            length = min(length, math.ceil(self._unassigned() / (2 * self.size)))
        return max(1, min(length, MAX_CHUNK))

    def _cut(self, tarball):
        length = min(self._chunk_length(), tarball.unassigned())
        positions = tarball.pending[tarball.cursor:tarball.cursor + length]
        tarball.cursor += length
        tarball.outstanding += 1
        chunk = Chunk(self.next_chunk_id, tarball.number, tarball.path, positions, tarball.offsets[positions],
                      tarball.sizes[positions], tarball.stamp)
        self.next_chunk_id += 1
        return chunk

    def _open(self, number, path):
        self.indexed(index_for_coordinator(number, path))

    def indexed(self, index):
        """Take in an :class:`~mpicolor.compute.IndexedTarball`: its frames become work (or it is unreadable)."""
        self.indexing.discard(index.number)
        number, path = index.number, index.path
        name = os.path.basename(path)
        if index.error is not None:
            self._unreadable(number, path, index.error)
            return
        frames = index.names
        stored = self.stored.pop(name, None)
        if stored is not None and stored.frames == frames and stored.packed.shape[1] == self.config.clusters:
            results = stored
            results.skipped, results.incomplete = index.skipped, index.incomplete
        else:
            if stored is not None:
                log.warning("%s changed since the checkpoint (other members); computing it again", name)
            results = store.TarballResults.empty(name, frames, self.config.clusters, index.skipped,
                                                 index.incomplete, crops=self.config.crop_borders)
        if index.incomplete:
            log.error("%s: %s; its readable frames are computed, but it is not taken as done", name,
                      index.incomplete)
        if index.skipped:
            log.info("%s: skipped members that are not frames: %s", name,
                     ", ".join(f"{count} {kind}" for kind, count in sorted(index.skipped.items())))
        tarball = ActiveTarball(number, path, results, index.offsets, index.sizes, results.pending(),
                                stamp=index.stamp)
        self.frames_known += len(frames)
        self.frames_done += len(frames) - len(tarball.pending)
        self.active[number] = tarball
        if len(tarball.pending) == 0:
            self._finish(tarball)

    def _unreadable(self, number, path, reason):
        name = os.path.basename(path)
        log.error("%s cannot be read: %s", path, reason)
        results = store.TarballResults.unreadable(name, reason, self.config.clusters)
        self.stored.pop(name, None)
        self.dirty[name] = results
        self.outcomes[number] = (name, store.UNREADABLE, 0, 0, reason)

    # ---- results --------------------------------------------------------------------------------------
    def accept(self, result):
        """Store a :class:`ChunkResult`; finish its tarball when it was the last one."""
        tarball = self.active[result.tarball]
        tarball.results.record(result.positions, result.packed, result.shares, result.backend, result.failures,
                               result.notes, result.crops)
        tarball.outstanding -= 1
        self.dirty[tarball.results.name] = tarball.results
        if result.unread:
            self._stop_reading(tarball, result.unread)
        n_frames = len(result.positions) - len(result.unread)
        self.frames_done += n_frames
        for position, reason in sorted(result.failures.items()):
            tarball.failures_logged += 1
            if tarball.failures_logged <= FAILURES_LOGGED:
                log.warning("%s: frame %r (member %d) failed: %s", tarball.results.name,
                            tarball.results.frames[position], position, reason)
        stats = self.rank_stats.setdefault(result.rank, RankStats())
        stats.frames += n_frames
        stats.busy += result.seconds
        computed = result.backend[result.backend != store.PENDING]
        for code, count in zip(*np.unique(computed, return_counts=True)):
            name = store.BACKEND_NAMES[int(code)]
            stats.backends[name] = stats.backends.get(name, 0) + int(count)
        if n_frames:
            cost = result.seconds / n_frames
            self.frame_seconds = cost if self.frame_seconds is None else 0.8 * self.frame_seconds + 0.2 * cost
        if tarball.unassigned() == 0 and tarball.outstanding == 0:
            self._finish(tarball)

    def _stop_reading(self, tarball, unread):
        """Hand out no more frames of a tarball some frames of which could not be read (``unread``: position ->
        reason): it ends incomplete when its chunks are back, and its unread frames stay pending for the next
        run."""
        if tarball.unread is None:
            position, reason = min(unread.items())
            log.error("%s: frame %r (member %d) could not be read (%s); no more of its frames are handed out and "
                      "it ends incomplete: run the same command again to complete it", tarball.results.name,
                      tarball.results.frames[position], position, reason)
            tarball.unread = reason
        tarball.cursor = len(tarball.pending)

    def _finish(self, tarball):
        results = tarball.results
        results.settle()
        if tarball.unread is not None:
            results.incomplete, results.status = tarball.unread, store.INCOMPLETE
        if tarball.failures_logged > FAILURES_LOGGED:
            log.warning("%s: %d more failed frames, listed in its failures table", results.name,
                        tarball.failures_logged - FAILURES_LOGGED)
        self.dirty[results.name] = results
        if results.status == store.COMPLETE:
            self.unwritten.append(results)
        del self.active[tarball.number]
        self._finished_outcome(tarball.number, results)
        self.tick()

    def _finished_outcome(self, number, results):
        failed = len(results.failures)
        done = int(np.count_nonzero(results.backend != store.PENDING)) - failed
        self.outcomes[number] = (results.name, results.status, done, failed, results.incomplete)
        if results.status == store.COMPLETE and not results.frames:
            log.warning("%s holds no frames", results.name)

    # ---- time -----------------------------------------------------------------------------------------
    def tick(self, force=False):
        """Checkpoint when the interval has passed or a tarball ended, and show progress."""
        now = self.clock()
        since = now - self.last_checkpoint
        if self.dirty and (force or since >= self.config.checkpoint_every
                           or (self.unwritten and since >= TARBALL_CHECKPOINT_GAP)):
            self.save_checkpoint()
        if self.progress is not None:
            self.progress.update(len(self.outcomes), self.frames_done, self._frames_estimate(), force=force)

    def save_checkpoint(self):
        """Write the changed tarballs to a new checkpoint generation, then the sqlite files of those that ended.

        The checkpoint first: a sqlite file on disk then always has its tarball complete in the checkpoint.
        """
        self.checkpoint.save(self.settings, list(self.dirty.values()))
        self.dirty.clear()
        self.last_checkpoint = self.clock()
        store.write_sqlite_files(self.config.output_dir, self.config.label, self.unwritten, self.settings)
        self.unwritten.clear()

    def _frames_estimate(self):
        seen = len(self.outcomes) + len(self.active)
        per_tarball = self.frames_known / seen if seen else 0
        return self.frames_known + round(per_tarball * (len(self.todo) + len(self.indexing)))

    @property
    def finished(self):
        """True when every tarball is done, unreadable or incomplete."""
        return not self.todo and not self.active and not self.indexing

    # ---- end ------------------------------------------------------------------------------------------
    def interrupt(self, why):
        """Write a last checkpoint and say how to resume (on SIGTERM / SIGINT)."""
        self.save_checkpoint()
        log.warning("%s: checkpoint written with %d frames done; run the same command again to resume", why,
                    self.frames_done)
        self.lock.release()
        return EXIT_INTERRUPTED

    def finish(self, placements=()):
        """Write the last checkpoint, log the summary, release OUTPUT_DIR, and return the exit status."""
        if self.dirty:
            self.save_checkpoint()
        if self.progress is not None:
            self.tick(force=True)
            self.progress.close()
        wall = self.clock() - self.started
        for line in self.summary(wall, placements):
            log.info("%s", line)
        store.write_json(os.path.join(self.config.output_dir, store.RUN_SUMMARY), self.summary_document(wall))
        self.lock.release()
        bad = [outcome for outcome in self.outcomes.values() if outcome[1] in (store.UNREADABLE, store.INCOMPLETE)]
        return EXIT_TARBALL_FAILED if bad else EXIT_OK

    def summary_document(self, wall):
        """The run's numbers for scripts and benchmarks (``run-summary.json``): wall seconds from rank 0's
        start-up to the end (MPI and Python start-up aside), and per rank frames, busy seconds, backends."""
        frames = sum(stats.frames for stats in self.rank_stats.values())
        # what coordinating costs rank 0 in processor time; known when it computed no frame itself (runs of
        # more than 16 ranks): on a shared node its wall time also counts the time others held the core
        coordinating = None if 0 in self.rank_stats else time.process_time() - self.cpu_started
        return {
            "wall": wall, "frames": frames, "coordinator_cpu_s": coordinating,
            "coordinator_frames_per_cpu_s": frames / coordinating if coordinating else None,
            "ranks": {str(rank): {"frames": stats.frames, "busy": stats.busy, "backends": stats.backends}
                      for rank, stats in sorted(self.rank_stats.items())},
            "tarballs": [dict(zip(("name", "status", "frames", "failures", "reason"), self.outcomes[number]))
                         for number in sorted(self.outcomes)],
            "settings": self.settings,
        }

    def summary(self, wall, placements=()):
        """Lines of the end-of-run summary."""
        computed = sum(stats.frames for stats in self.rank_stats.values())
        failed = sum(outcome[3] for outcome in self.outcomes.values())
        lines = [f"done: {len(self.outcomes)} tarballs, {computed} frames computed in this run "
                 f"({failed} failed frames in all), wall {format_duration(wall)}, "
                 f"{computed / wall if wall > 0 else 0:.1f} frames/s"]
        for number in sorted(self.outcomes):
            name, status, frames, failures, reason = self.outcomes[number]
            text = f"  {name}: {status}, {frames} frames, {failures} failed"
            lines.append(text + (f" ({reason})" if reason else ""))
        for rank in sorted(self.rank_stats):
            stats = self.rank_stats[rank]
            rate = stats.frames / stats.busy if stats.busy > 0 else 0.0
            backends = ", ".join(f"{name} {count}" for name, count in sorted(stats.backends.items()))
            lines.append(f"  rank {rank}: {stats.frames} frames, {rate:.1f} frames/s while busy, "
                         f"busy {100 * stats.busy / wall if wall > 0 else 0:.0f}% ({backends})")
        fallbacks = [p for p in placements if p.fallback is not None]
        if fallbacks:
            lines.append(f"  {len(fallbacks)} GPU ranks computed on the CPU: {fallbacks[0].fallback}")
        return lines


def run_serial(config, computer=None):
    """Run a whole job in this process: the serial twin of :func:`mpicolor.mpi.run_job`.

    Returns
    -------
    int
        The exit status.
    """
    coordinator = Coordinator(config, size=1)
    coordinator.start()
    coordinator.begin()
    computer = computer or FrameComputer(config)
    try:
        while not coordinator.finished:
            chunk = coordinator.next_chunk()
            if chunk is not None:
                coordinator.accept(computer.compute(chunk))
            coordinator.tick()
    finally:
        computer.close()
    return coordinator.finish()
