"""The coordinator of a run (rank 0's bookkeeping) and the serial twin of the MPI dispatch.

Plain Python with no MPI: :mod:`mpicolor.mpi` moves chunks and results between ranks and calls the
:class:`Coordinator` for every decision, and :func:`run_serial` drives the same coordinator in one
process, so that the whole pipeline is testable without ``mpiexec``.
"""

import dataclasses
import errno
import logging
import math
import os
import resource
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mpicolor.compute import Chunk, FrameComputer, index_for_coordinator
from mpicolor.progress import Progress, format_duration
from mpicolor.state import resume
from mpicolor.state.atomic import remove_stale_temporaries, write_json
from mpicolor.state.checkpoint import CHECKPOINT, CHECKPOINT_FOLDER, Checkpoint, DamagedCheckpoint
from mpicolor.state.output_dir import RUN_SUMMARY, OutputError, OutputLock, prepare_output_dir
from mpicolor.state.results import (BACKEND_NAMES, COMPLETE, INCOMPLETE, PARTIAL, PENDING, UNREADABLE,
                                    TarballResults)
from mpicolor.state.sqlite import sqlite_name
from mpicolor.state.writer import StateWriter
from mpicolor.tarballs import find_tarballs

log = logging.getLogger(__name__)

# exit status of `mpicolor run`
EXIT_OK, EXIT_TARBALL_FAILED, EXIT_USAGE, EXIT_OUTPUT, EXIT_INTERRUPTED, EXIT_RANK_LOST = 0, 1, 2, 3, 4, 5

# A chunk should take about this long: short enough that ranks of different speed finish together, long
# enough that rank 0 is not flooded with messages when frames are cheap.
CHUNK_SECONDS = 0.25
MAX_CHUNK = 4096
# a tarball's end checkpoints at once, unless the last checkpoint is younger than this: then the next tick
# does, for every tarball ended meanwhile (an fsynced checkpoint per tarball would cap rank 0 at a few
# dozen tarballs per second)
TARBALL_CHECKPOINT_GAP = 1.0
# ended tarballs waiting for the writer beyond which rank 0 waits for it: what bounds rank 0's memory when
# frames come faster than the disk takes their results
WRITE_BACKLOG = 4
# tarballs being indexed by workers at once, at least (more with more ranks)
INDEXING_AHEAD = 4
# failed frames logged one by one per tarball; the rest are counted, so that a broken data set of 10,000
# frames makes a readable log (every reason is in the failures table)
FAILURES_LOGGED = 5
@dataclass
class TarballOutcome:
    """How a tarball ended in this run, for the summary.

    ``frames`` and ``failures`` are None for a tarball already done before this run (its sqlite file exists
    and is not read again).
    """

    name: str
    status: str
    frames: int | None
    failures: int | None
    reason: str | None


@dataclass
class SqliteJob:
    """A worker's job: write the sqlite file of tarball ``name`` from its checkpoint file."""

    name: str


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
    results: TarballResults
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


class WorkerLedger:
    """What each worker holds, and how long it has been silent: rank 0's view for ``--stall-timeout``.

    Work is keyed by ``("chunk", chunk_id)`` or ``("index", tarball number)``: the ids that come back in a
    :class:`~mpicolor.compute.ChunkResult` or :class:`~mpicolor.compute.IndexedTarball`. A worker's silence is
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
        self.settings = config.stored_settings()
        self.checkpoint = Checkpoint(config.output_dir)
        self.lock = OutputLock(config.output_dir)
        self.todo = deque()          # (number, path) of tarballs not yet indexed
        self.reclaimed = deque()     # chunks a lost rank held, to hand out again first
        self.lost_ranks = {}         # rank -> why it was given up on
        self.active = {}             # number -> ActiveTarball
        self.dirty = {}              # name -> TarballResults changed since they were last saved
        self.sqlite_due = deque()    # complete tarballs, their checkpoint files written, their sqlite files not
        self.sqlite_out = 0          # sqlite files workers are writing
        self.workers_write_sqlite = delegate_indexing
        self.outcomes = {}           # number -> TarballOutcome
        self.paths = []
        self.rank_stats = {}
        self.writer = StateWriter(self.checkpoint, config.output_dir, self.settings, config.input_dir)
        self.next_chunk_id = 0
        self.frames_done = 0
        self.frames_known = 0
        self.frame_seconds = None    # running mean cost of a frame, for chunk sizes
        self.started = clock()
        self.cpu_started = time.process_time()
        self.last_checkpoint = self.last_ended_save = self.started
        self.progress = None

    # ---- start ----------------------------------------------------------------------------------------
    def start(self):
        """Find the tarballs, lock OUTPUT_DIR, open the checkpoint; raise ValueError for a bad INPUT_DIR,
        OutputError or OSError for an OUTPUT_DIR that cannot be used."""
        try:
            paths, rejected = find_tarballs(self.config.input_dir)
        except (FileNotFoundError, NotADirectoryError) as error:
            raise ValueError(f"INPUT_DIR: {error}") from None
        prepare_output_dir(self.config.output_dir)
        self.lock.acquire()
        remove_stale_temporaries(self.config.output_dir)
        stored = self.checkpoint.open()
        if stored is not None:
            conflict = resume.settings_conflict(stored, self.settings)
            if conflict:
                raise OutputError(
                    f"{self.config.output_dir} holds {conflict}. Resume with the same settings, or start over in a "
                    f"new OUTPUT_DIR (or remove {CHECKPOINT}, {CHECKPOINT_FOLDER}/ and the hist_*.sqlite files "
                    "from this one)")
            moved_from = self.checkpoint.input_dir
            if moved_from and moved_from != self.config.input_dir:
                log.info("INPUT_DIR was %s and is now %s: stored results are reused for the tarballs whose "
                         "fingerprints match", moved_from, self.config.input_dir)
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
        self.started = self.last_checkpoint = self.last_ended_save = self.clock()
        self.cpu_started = time.process_time()
        self.progress = Progress(len(self.paths), clock=self.clock, mode=self.config.progress)

    def _already_done(self, number, path):
        """An existing sqlite file means done, as in the original: such a tarball is neither indexed nor read."""
        name = os.path.basename(path)
        sqlite_file = sqlite_name(name, self.config.label)
        if not os.path.exists(os.path.join(self.config.output_dir, sqlite_file)):
            return False
        self.outcomes[number] = TarballOutcome(name, COMPLETE, None, None, f"already done: {sqlite_file} exists")
        return True

    def _stored(self, name):
        """The checkpoint's results of tarball ``name``, or None (none stored, or its file is damaged)."""
        if name not in self.checkpoint.files:
            return None
        try:
            return self.checkpoint.read(name)
        except DamagedCheckpoint as error:
            log.warning("the checkpoint of %s cannot be used (%s); computing it again", name, error)
            return None

    # ---- assignment -----------------------------------------------------------------------------------
    def next_chunk(self):
        """The next chunk to compute, or None when every frame is handed out."""
        if self.reclaimed:
            chunk = dataclasses.replace(self.reclaimed.popleft(), chunk_id=self.next_chunk_id)
            self.next_chunk_id += 1
            return chunk
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
        return (sum(tarball.unassigned() for tarball in self.active.values())
                + sum(len(chunk.positions) for chunk in self.reclaimed))

    def rank_lost(self, rank, why, work):
        """Give up on a stuck rank: record why, and hand out again the work it held.

        Parameters
        ----------
        rank : int
        why : str
            What it was doing and for how long, for the log and the summary.
        work : list
            What it held: :class:`~mpicolor.compute.Chunk` objects (computed again by others, first),
            ``(number, path)`` tarballs to index (indexed again) and :class:`SqliteJob` (written by another).
        """
        log.error("rank %d %s; it gets no more work, and what it held goes to other ranks", rank, why)
        self.lost_ranks[rank] = why
        for item in work:
            if isinstance(item, Chunk):
                self.reclaimed.append(item)
            elif isinstance(item, SqliteJob):
                self.sqlite_out -= 1
                self.sqlite_due.appendleft(item.name)
            else:
                self.indexing.discard(item[0])
                self.todo.appendleft(item)

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
        """Take in an :class:`~mpicolor.compute.IndexedTarball`: its frames become work (or it is unreadable).

        Stored results are reused when they belong to this very tarball (:func:`mpicolor.state.resume.reusable`).
        """
        self.indexing.discard(index.number)
        number, path = index.number, index.path
        name = os.path.basename(path)
        if index.error is not None:
            self._unreadable(number, path, index.error)
            return
        results = resume.reusable(self._stored(name), index, self.config.clusters)
        if results is None:
            results = TarballResults.empty(name, index.names, self.config.clusters, index.skipped, index.incomplete,
                                           crops=self.config.crop_borders, fingerprint=index.fingerprint)
        if index.incomplete:
            log.error("%s: %s; its readable frames are computed, but it is not taken as done", name,
                      index.incomplete)
        if index.skipped:
            log.info("%s: skipped members that are not frames: %s", name,
                     ", ".join(f"{count} {kind}" for kind, count in sorted(index.skipped.items())))
        tarball = ActiveTarball(number, path, results, index.offsets, index.sizes, results.pending(),
                                stamp=index.stamp)
        self.frames_known += len(index.names)
        self.frames_done += len(index.names) - len(tarball.pending)
        self.active[number] = tarball
        if len(tarball.pending) == 0:
            self._finish(tarball)

    def _unreadable(self, number, path, reason):
        name = os.path.basename(path)
        log.error("%s cannot be read: %s", path, reason)
        self.dirty[name] = TarballResults.unreadable(name, reason, self.config.clusters)
        self.outcomes[number] = TarballOutcome(name, UNREADABLE, 0, 0, reason)

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
        computed = result.backend[result.backend != PENDING]
        for code, count in zip(*np.unique(computed, return_counts=True)):
            name = BACKEND_NAMES[int(code)]
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
            results.incomplete, results.status = tarball.unread, INCOMPLETE
        if tarball.failures_logged > FAILURES_LOGGED:
            log.warning("%s: %d more failed frames, listed in its failures table", results.name,
                        tarball.failures_logged - FAILURES_LOGGED)
        self.dirty[results.name] = results
        del self.active[tarball.number]
        failed = len(results.failures)
        done = int(np.count_nonzero(results.backend != PENDING)) - failed
        self.outcomes[tarball.number] = TarballOutcome(results.name, results.status, done, failed,
                                                       results.incomplete)
        if results.status == COMPLETE and not results.frames:
            log.warning("%s holds no frames", results.name)
        self.tick()

    # ---- time -----------------------------------------------------------------------------------------
    def tick(self, force=False):
        """Checkpoint when the interval has passed or a tarball ended, and show progress.

        A tarball's end saves only the tarballs that ended (at most once a second); the tarballs in progress
        are saved at the checkpoint interval, so that what a crash costs stays bounded by it while a save
        writes what changed, not what is in flight; once every frame is computed, what is left is saved at
        once. Saves run in the writer's thread, one at a time: while one is written, the next gathers
        (``force`` waits for it, and so does a backlog of more than WRITE_BACKLOG ended tarballs).
        """
        if force or len(self._ended()) > WRITE_BACKLOG:
            self.writer.wait()
        elif self.writer.busy():
            return self._show_progress()
        self.sqlite_due.extend(self.writer.saved_complete)
        self.writer.saved_complete.clear()
        now = self.clock()
        if self.dirty and (force or self.computed or now - self.last_checkpoint >= self.config.checkpoint_every):
            self.save_checkpoint()
        elif now - self.last_ended_save >= TARBALL_CHECKPOINT_GAP and self._ended():
            self.save_checkpoint(only_ended=True)
        elif self.sqlite_due and not self.workers_write_sqlite:
            self.writer.submit([], self._take_sqlite_due())
        self._show_progress(force)

    def _show_progress(self, force=False):
        if self.progress is not None:
            self.progress.update(len(self.outcomes), self.frames_done, self._frames_estimate(), force=force)

    def _ended(self):
        """The changed tarballs that will not change again in this run."""
        return [results for results in self.dirty.values() if results.status != PARTIAL]

    def _take_sqlite_due(self):
        names = list(self.sqlite_due)
        self.sqlite_due.clear()
        return names

    def save_checkpoint(self, only_ended=False, wait=False):
        """Start writing the changed tarballs (``only_ended``: those that ended) to the checkpoint (``wait``:
        until written).

        The sqlite files of the tarballs this completes are written after it: by workers, handed out once the
        save is done (:meth:`sqlite_job`), or without workers by the same batch. Either way a sqlite file on
        disk always has its tarball complete in the checkpoint.
        """
        self.writer.wait()
        changed = self._ended() if only_ended else list(self.dirty.values())
        for results in changed:
            del self.dirty[results.name]
        sqlite_names = [] if self.workers_write_sqlite else (
            self._take_sqlite_due() + [results.name for results in changed if results.status == COMPLETE])
        # a tarball in progress goes on changing while the writer writes it: the writer gets a copy
        self.writer.submit([results if results.status != PARTIAL else results.copy() for results in changed],
                           sqlite_names, index=not only_ended)
        self.last_ended_save = self.clock()
        if not only_ended:
            self.last_checkpoint = self.last_ended_save
        if wait:
            self.writer.wait()

    def sqlite_job(self):
        """A :class:`SqliteJob` for a worker: a complete tarball whose sqlite file is to be written; or None."""
        if not self.sqlite_due:
            return None
        self.sqlite_out += 1
        return SqliteJob(self.sqlite_due.popleft())

    def sqlite_written(self, name, error):
        """A worker wrote ``name``'s sqlite file, or could not (``error``: why; then OUTPUT_DIR is unusable)."""
        self.sqlite_out -= 1
        if error is not None:
            raise OSError(errno.EIO, f"a worker could not write the sqlite file of {name}: {error}",
                          self.config.output_dir)

    def _frames_estimate(self):
        seen = len(self.outcomes) + len(self.active)
        per_tarball = self.frames_known / seen if seen else 0
        return self.frames_known + round(per_tarball * (len(self.todo) + len(self.indexing)))

    @property
    def computed(self):
        """True when every tarball is done, unreadable or incomplete."""
        return not self.todo and not self.active and not self.indexing

    @property
    def finished(self):
        """True when every tarball is done and every output written."""
        return (self.computed and not self.dirty and not self.sqlite_due and not self.sqlite_out
                and not self.writer.busy())

    # ---- end ------------------------------------------------------------------------------------------
    def interrupt(self, why):
        """Write a last checkpoint and say how to resume (on SIGTERM / SIGINT)."""
        self.save_checkpoint(wait=True)
        self.writer.close()
        log.warning("%s: checkpoint written with %d frames done; run the same command again to resume", why,
                    self.frames_done)
        self.lock.release()
        return EXIT_INTERRUPTED

    def finish(self, placements=()):
        """Write what is left to write, log the summary, release OUTPUT_DIR, and return the exit status."""
        self.workers_write_sqlite = False  # whatever sqlite file is still due, rank 0 writes
        while self.dirty or self.sqlite_due or self.writer.busy():
            self.tick(force=True)
        self.writer.close()
        if self.progress is not None:
            self._show_progress(force=True)
            self.progress.close()
        wall = self.clock() - self.started
        for line in self.summary(wall, placements):
            log.info("%s", line)
        write_json(os.path.join(self.config.output_dir, RUN_SUMMARY), self.summary_document(wall))
        self.lock.release()
        if self.lost_ranks:
            return EXIT_RANK_LOST
        bad = [outcome for outcome in self.outcomes.values() if outcome.status in (UNREADABLE, INCOMPLETE)]
        return EXIT_TARBALL_FAILED if bad else EXIT_OK

    def summary_document(self, wall):
        """The run's numbers for scripts and benchmarks (``run-summary.json``): wall seconds from rank 0's
        start-up to the end (MPI and Python start-up aside); per rank frames, busy seconds, backends; rank 0's
        peak memory and bytes written, and the durations of checkpoint saves."""
        frames = sum(stats.frames for stats in self.rank_stats.values())
        # what coordinating costs rank 0 in processor time; known when it computed no frame itself (runs of
        # more than 16 ranks): on a shared node its wall time also counts the time others held the core
        coordinating = None if 0 in self.rank_stats else time.process_time() - self.cpu_started
        return {
            "wall": wall, "frames": frames, "coordinator_cpu_s": coordinating,
            "coordinator_frames_per_cpu_s": frames / coordinating if coordinating else None,
            "ranks": {str(rank): {"frames": stats.frames, "busy": stats.busy, "backends": stats.backends}
                      for rank, stats in sorted(self.rank_stats.items())},
            "tarballs": [vars(self.outcomes[number]) for number in sorted(self.outcomes)],
            "lost_ranks": {str(rank): why for rank, why in sorted(self.lost_ranks.items())},
            "settings": self.settings,
            "rank0": {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      **_bytes_written()},
            "checkpoint_saves": self.writer.times.document(),
        }

    def summary(self, wall, placements=()):
        """Lines of the end-of-run summary."""
        computed = sum(stats.frames for stats in self.rank_stats.values())
        failed = sum(outcome.failures or 0 for outcome in self.outcomes.values())
        lines = [f"done: {len(self.outcomes)} tarballs, {computed} frames computed in this run "
                 f"({failed} failed frames in the tarballs read), wall {format_duration(wall)}, "
                 f"{computed / wall if wall > 0 else 0:.1f} frames/s"]
        for number in sorted(self.outcomes):
            outcome = self.outcomes[number]
            text = f"  {outcome.name}: {outcome.status}"
            if outcome.frames is not None:
                text += f", {outcome.frames} frames, {outcome.failures} failed"
            lines.append(text + (f" ({outcome.reason})" if outcome.reason else ""))
        for rank in sorted(self.rank_stats):
            stats = self.rank_stats[rank]
            rate = stats.frames / stats.busy if stats.busy > 0 else 0.0
            backends = ", ".join(f"{name} {count}" for name, count in sorted(stats.backends.items()))
            lines.append(f"  rank {rank}: {stats.frames} frames, {rate:.1f} frames/s while busy, "
                         f"busy {100 * stats.busy / wall if wall > 0 else 0:.0f}% ({backends})")
        for rank, why in sorted(self.lost_ranks.items()):
            lines.append(f"  rank {rank} was lost: {why}; others computed its frames")
        fallbacks = [p for p in placements if p.fallback is not None]
        if fallbacks:
            lines.append(f"  {len(fallbacks)} GPU ranks computed on the CPU: {fallbacks[0].fallback}")
        return lines


def _bytes_written():
    """What this process wrote: ``write_bytes`` to storage and ``wchar`` through write calls (Linux's
    /proc/self/io; empty where it does not exist)."""
    try:
        with open("/proc/self/io") as stream:
            counters = dict(line.split(": ") for line in stream.read().splitlines())
    except OSError:
        return {}
    return {"write_bytes": int(counters["write_bytes"]), "wchar": int(counters["wchar"])}


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
        while not coordinator.computed:
            chunk = coordinator.next_chunk()
            if chunk is not None:
                coordinator.accept(computer.compute(chunk))
            coordinator.tick()
    finally:
        computer.close()
    return coordinator.finish()
