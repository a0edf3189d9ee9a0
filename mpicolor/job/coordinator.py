"""Rank 0's bookkeeping of a run, and the serial twin of the MPI dispatch.

Plain Python with no MPI: rank 0's :class:`~mpicolor.job.dispatch.Dispatcher` moves chunks (or, across nodes,
ranges) and results between ranks and calls the :class:`Coordinator` for every decision, and
:func:`run_serial` drives the same coordinator in one process, so that the whole pipeline is testable without
``mpiexec``. How much work to cut is the :class:`~mpicolor.job.schedule.Schedule`'s to say; what is reused on
resume, :mod:`mpicolor.state.resume`'s; what the run did, the :class:`~mpicolor.job.report.RunReport`'s.
"""

import dataclasses
import errno
import logging
import os
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from mpicolor import __version__
from mpicolor.job.exits import EXIT_INTERRUPTED
from mpicolor.job.logs import RunLog
from mpicolor.job.progress import Progress
from mpicolor.job.protocol import Alive, Chunk, ChunkResult, IndexedTarball, IndexJob, SqliteJob, SqliteWritten
from mpicolor.job.report import RunReport, TarballOutcome
from mpicolor.job.schedule import CHUNK_SECONDS, INDEXING_AHEAD, Schedule
from mpicolor.job.tiers import ranks_text
from mpicolor.job.worker import FrameComputer, index_for_coordinator
from mpicolor.state import resume
from mpicolor.state.atomic import remove_stale_temporaries, write_json
from mpicolor.state.checkpoint import CHECKPOINT, CHECKPOINT_FOLDER, Checkpoint, DamagedCheckpoint
from mpicolor.state.datasets import find_data_sets
from mpicolor.state.output_dir import RUN_LOG, RUN_SUMMARY, OutputError, OutputLock, prepare_output_dir
from mpicolor.state.results import COMPLETE, INCOMPLETE, PARTIAL, PENDING, UNREADABLE, TarballResults
from mpicolor.state.sqlite import sqlite_name
from mpicolor.state.writer import StateWriter

log = logging.getLogger(__name__)

# a tarball's end checkpoints at once, unless the last checkpoint is younger than this: then the next tick
# does, for every tarball ended meanwhile (an fsynced checkpoint per tarball would cap rank 0 at a few
# dozen tarballs per second)
TARBALL_CHECKPOINT_GAP = 1.0
# ended tarballs waiting for the writer beyond which rank 0 waits for it: what bounds rank 0's memory when
# frames come faster than the disk takes their results
WRITE_BACKLOG = 4
# failed frames logged one by one per tarball; the rest are counted, so that a broken data set of 10,000
# frames makes a readable log (every reason is in the failures table)
FAILURES_LOGGED = 5


@dataclass
class ActiveTarball:
    """A data set being computed: its results, its frames' places, and the frames not yet handed out; a
    video's index too (``video``), from which its chunks' segments are cut."""

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
    video: object = None        # a video's VideoIndex
    segment_starts: np.ndarray | None = None  # a video's: the first frame of each of its segments

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
        Let workers index tarballs (:meth:`next_job`, :meth:`indexed`): at thousands of frames per second
        indexing would take most of rank 0's time. Rank 0 still indexes when it has nothing to hand out.
    clock : callable
        Monotonic seconds, replaceable in tests.
    """

    def __init__(self, config, size, delegate_indexing=False, clock=time.monotonic):
        self.config = config
        self.delegate_indexing = delegate_indexing
        self.indexing = set()        # numbers of tarballs a worker is indexing
        self.clock = clock
        self.settings = config.stored_settings()
        self.checkpoint = Checkpoint(config.output_dir)
        self.lock = OutputLock(config.output_dir)
        self.run_log = None
        self.todo = deque()          # (number, path) of tarballs not yet indexed
        self.reclaimed = deque()     # chunks a lost rank held, to hand out again first
        self.active = {}             # number -> ActiveTarball
        self.dirty = {}              # name -> TarballResults changed since they were last saved
        self.sqlite_due = deque()    # complete tarballs, their checkpoint files written, their sqlite files not
        self.sqlite_out = 0          # sqlite files workers are writing
        self.workers_write_sqlite = delegate_indexing
        self.report = RunReport()
        self.outcomes = self.report.outcomes  # number -> TarballOutcome
        self.paths = []
        self.writer = StateWriter(self.checkpoint, config.output_dir, self.settings, config.input_dir)
        self.next_chunk_id = 0
        self.frames_done = 0
        self.frames_known = 0
        self.organise(size)
        self.node_cpu = {}           # node coordinator -> its processor seconds, as last reported
        # the work's own wall and processor times: from the first chunk handed out to the last result
        self.first_handed = self.last_result = self.work_cpu = self.last_result_cpu = None
        self.started = clock()
        self.last_checkpoint = self.last_ended_save = self.started
        self.progress = None

    def organise(self, size, unit_seconds=CHUNK_SECONDS, nodes=None):
        """Set how the run computes, once the job's layout is known.

        Parameters
        ----------
        size : int
            As above.
        unit_seconds : float
            What a peer's unit of work should take: a chunk's `CHUNK_SECONDS` for ranks, a range's for nodes.
        nodes : dict of int to tuple of int, optional
            Across nodes: each node coordinator's node (its ranks), so that losing one names the ranks lost
            with it.
        """
        self.size = size
        self.schedule = Schedule(size, unit_seconds)
        self.nodes = nodes or {}

    # ---- start ----------------------------------------------------------------------------------------
    def open_run(self):
        """Find the data sets (tarballs and videos), lock OUTPUT_DIR, open the checkpoint and list what is to
        compute; raise ValueError for a bad INPUT_DIR, OutputError or OSError for an OUTPUT_DIR that cannot be
        used."""
        try:
            paths, rejected = find_data_sets(self.config.input_dir)
        except (FileNotFoundError, NotADirectoryError) as error:
            raise ValueError(f"INPUT_DIR: {error}") from None
        prepare_output_dir(self.config.output_dir)
        self.lock.acquire()
        self.run_log = RunLog(os.path.join(self.config.output_dir, RUN_LOG))
        log.info("mpicolor %s run %s %s", __version__, self.config.input_dir, self.config.output_dir)
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
            log.warning("INPUT_DIR %s holds no tarballs (*.tar) or videos: nothing to do", self.config.input_dir)
        for path, reason in rejected:
            self._unreadable(len(self.outcomes), path, reason)
        skipped = 0
        for number, path in enumerate(paths, start=len(rejected)):
            if self._already_done(number, path):
                skipped += 1
            else:
                self.todo.append((number, path))
        log.info("%d data sets in %s: %d already done, %d to compute", len(self.paths), self.config.input_dir,
                 skipped, len(self.todo))

    def start_clocks(self):
        """Start the clocks once every rank is ready, so that Python and MPI start-up stay out of the numbers."""
        self.started = self.last_checkpoint = self.last_ended_save = self.clock()
        self.report.cpu_started = time.process_time()
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
    @property
    def finished(self):
        """True when every output is written (the dispatcher's end)."""
        return self.all_written

    def next_chunk(self, capacity=1):
        """The next chunk (or range) for a peer computing with ``capacity`` ranks, or None when every frame is
        handed out."""
        if self.reclaimed:
            chunk = dataclasses.replace(self.reclaimed.popleft(), chunk_id=self.next_chunk_id)
            self.next_chunk_id += 1
            return chunk
        if not self.delegate_indexing:
            while self.todo and self._unassigned() < self.schedule.frames_ahead():
                self._open(*self.todo.popleft())
        elif self.todo and self._unassigned() == 0 and not self.indexing:
            # nothing to hand out and no worker indexing: index here rather than wait (a tarball of 44,470
            # frames costs a second, so rank 0 asks workers first: its dispatcher hands out jobs before chunks)
            self._open(*self.todo.popleft())
        for tarball in self.active.values():
            if tarball.unassigned() > 0:
                if self.first_handed is None:
                    self.first_handed, self.work_cpu = self.clock(), time.process_time()
                return self._cut(tarball, capacity)
        return None

    def next_job(self):
        """An `IndexJob` or a `SqliteJob` for the least loaded peer, or None."""
        return self._index_job() or self._sqlite_job()

    def _index_job(self):
        """A tarball for a worker to index when more frames will be wanted soon, else None."""
        if (self.delegate_indexing and self.todo and len(self.indexing) < self.schedule.indexing_at_once()
                and self._unassigned() + self._frames_being_indexed() < self.schedule.frames_ahead()):
            number, path = self.todo.popleft()
            self.indexing.add(number)
            return IndexJob(number, path)
        return None

    def _frames_being_indexed(self):
        """The frames the data sets being indexed will likely bring: as many as those seen so far hold, on
        average; before any, a share of `frames_ahead` such that `INDEXING_AHEAD` are indexed at first (else at
        the start every data set would be asked for at once, and rank 0 would hold all of their indexes)."""
        per_data_set = self._frames_per_data_set() or self.schedule.frames_ahead() / INDEXING_AHEAD
        return len(self.indexing) * per_data_set

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
            The orders it held (`mpicolor.job.protocol`): chunks and ranges (their frames still pending are
            computed again by others, first), tarballs to index (indexed again), sqlite files (written by another).
        """
        node = self.nodes.get(rank, ())
        with_it = [other for other in node if other != rank]
        log.error("rank %d %s; it gets no more work, and what it held goes to other %s", rank, why,
                  f"nodes (the ranks of its node, {ranks_text(with_it)}, are lost with it)" if with_it else "ranks")
        self.report.lost_ranks[rank] = why
        for other in with_it:
            self.report.lost_ranks[other] = f"lost with its node coordinator, rank {rank}"
        for order in work:
            {Chunk: self._reclaim, IndexJob: self._index_again, SqliteJob: self._sqlite_again}[type(order)](order)

    def _reclaim(self, chunk):
        """A lost rank's chunk or range: its frames still pending go to others, first (a node's interim batches
        may have brought some back)."""
        tarball = self.active[chunk.tarball]
        pending = tarball.results.backend[chunk.positions] == PENDING
        if pending.all():
            self.reclaimed.append(chunk)
        elif pending.any():
            self.reclaimed.append(dataclasses.replace(chunk, positions=chunk.positions[pending],
                                                      offsets=chunk.offsets[pending], sizes=chunk.sizes[pending]))
        else:
            tarball.outstanding -= 1
            if tarball.unassigned() == 0 and tarball.outstanding == 0:
                self._end_tarball(tarball)

    def _index_again(self, job):
        self.indexing.discard(job.number)
        self.todo.appendleft((job.number, job.path))

    def _sqlite_again(self, job):
        self.sqlite_out -= 1
        self.sqlite_due.appendleft(job.name)

    def serve_alone(self):
        """No peer is left: index and write the sqlite files here (the dispatcher computes the frames)."""
        self.workers_write_sqlite = False

    def _cut(self, tarball, capacity):
        # the tail, when nothing is left to index: what is left is split so that all ranks finish together
        tail = not self.todo and not self.indexing
        length = min(self.schedule.work_length(capacity, self._unassigned(), tail), tarball.unassigned())
        if tarball.video is not None:
            whole = self._whole_segments(tarball, length)
            share = max(length, -(-self._unassigned() // self.size))
            length = share if tail and whole > share and self._head_to_decode(tarball, share) <= 2 * share else whole
        positions = tarball.pending[tarball.cursor:tarball.cursor + length]
        tarball.cursor += length
        tarball.outstanding += 1
        chunk = Chunk(self.next_chunk_id, tarball.number, tarball.path, positions, tarball.offsets[positions],
                      tarball.sizes[positions], tarball.stamp, last=tail and self._unassigned() == 0,
                      segments=self._segments(tarball, tarball.offsets[positions]))
        self.next_chunk_id += 1
        return chunk

    @staticmethod
    def _whole_segments(video, length):
        """``length`` frames of a video from its cursor, made longer to end where a segment ends: a chunk is a
        run of whole segments, so that none is decoded twice (a segment longer than the schedule asks is
        still one chunk, but at the tail: see `_cut`)."""
        frames = video.offsets[video.pending[video.cursor:]]
        next_segment = np.searchsorted(video.segment_starts, frames[length - 1], side="right")
        if next_segment == len(video.segment_starts):
            return len(frames)
        return int(np.searchsorted(frames, video.segment_starts[next_segment]))

    @staticmethod
    def _head_to_decode(video, length):
        """Frames the decoder of a chunk starting ``length`` frames after a video's cursor decodes and throws away
        (from its segment's keyframe).

        At the tail, a segment holding more than a rank's even share of what is left would leave ranks idle: a
        chunk then ends mid-segment when the next one's head is at most twice the share, so that the decode it
        repeats stays below what the split gains (a video of one keyframe is cut once or twice, not per rank).
        """
        frame = video.offsets[video.pending[video.cursor + length]]
        return int(frame - video.segment_starts[np.searchsorted(video.segment_starts, frame, side="right") - 1])

    @staticmethod
    def _segments(video, frames):
        """The `mpicolor.state.videos.Segment` of each run of ``frames`` (numbers in a video, ascending) that
        lies in one of the video's segments; () for a tarball."""
        if video.video is None:
            return ()
        segment_of = np.searchsorted(video.segment_starts, frames, side="right")
        firsts = np.flatnonzero(np.diff(segment_of, prepend=-1))
        lasts = np.append(firsts[1:], len(frames)) - 1
        return tuple(video.video.segment(int(frames[first]), int(frames[last]) + 1)
                     for first, last in zip(firsts.tolist(), lasts.tolist()))

    def _open(self, number, path):
        self.indexed(index_for_coordinator(number, path, self.config.fps))

    def indexed(self, index):
        """Take in an :class:`~mpicolor.job.worker.IndexedTarball`: its frames become work (or it is unreadable).

        Stored results are reused when they belong to this very tarball (:func:`mpicolor.state.resume.reusable`).
        """
        self.indexing.discard(index.number)
        number, path = index.number, index.path
        name = os.path.basename(path)
        if index.error is not None:
            self._unreadable(number, path, index.error)
            return
        results = resume.reusable(self._stored(name), index, self.config.clusters, self.config.engine())
        if results is None:
            results = TarballResults.empty(name, index.names, self.config.clusters, index.skipped, index.incomplete,
                                           crops=self.config.crop_borders, fingerprint=index.fingerprint,
                                           seconds=index.seconds)
        if index.incomplete:
            log.error("%s: %s; its readable frames are computed, but it is not taken as done", name,
                      index.incomplete)
        if index.skipped:
            log.info("%s: skipped members that are not frames: %s", name,
                     ", ".join(f"{count} {kind}" for kind, count in sorted(index.skipped.items())))
        tarball = ActiveTarball(number, path, results, index.offsets, index.sizes, results.pending(),
                                stamp=index.stamp, video=index.video,
                                segment_starts=None if index.video is None else index.video.segment_starts())
        self.frames_known += len(index.names)
        self.frames_done += len(index.names) - len(tarball.pending)
        self.active[number] = tarball
        if len(tarball.pending) == 0:
            self._end_tarball(tarball)

    def _unreadable(self, number, path, reason):
        name = os.path.basename(path)
        log.error("%s cannot be read: %s", path, reason)
        self.dirty[name] = TarballResults.unreadable(name, reason, self.config.clusters)
        self.outcomes[number] = TarballOutcome(name, UNREADABLE, 0, 0, reason)

    # ---- results --------------------------------------------------------------------------------------
    def answered(self, rank, message):
        """Take a peer's answer (``rank`` None: rank 0's own results)."""
        {ChunkResult: self.accept, IndexedTarball: self.indexed, SqliteWritten: self.sqlite_written,
         Alive: self.alive}[type(message)](message)
        if getattr(message, "cpu", None) is not None:
            self.node_cpu[rank] = message.cpu

    def alive(self, message):
        """A node coordinator's word: alive, and the ranks of its node it gave up on."""
        self.report.lost_ranks.update(message.lost)

    def accept(self, result):
        """Store a :class:`ChunkResult` (a chunk's, or a batch of a range's); finish its tarball when it was the
        last."""
        tarball = self.active[result.tarball]
        tarball.results.record(result.positions, result.packed, result.shares, result.backend, result.failures,
                               result.notes, result.crops)
        self.last_result, self.last_result_cpu = self.clock(), time.process_time()
        if result.last:
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
        self.report.chunk_done(result)
        self.schedule.observe(n_frames, result.seconds)
        if tarball.unassigned() == 0 and tarball.outstanding == 0:
            self._end_tarball(tarball)

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

    def _end_tarball(self, tarball):
        """A tarball's last chunk is back: settle its status, count its outcome, queue it for saving."""
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
        if self.dirty and (force or self.all_computed or now - self.last_checkpoint >= self.config.checkpoint_every):
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
        save is done (:meth:`next_job`), or without workers by the same batch. Either way a sqlite file on
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

    def _sqlite_job(self):
        """A :class:`SqliteJob` for a worker: a complete tarball whose sqlite file is to be written; or None."""
        if not self.sqlite_due or not self.workers_write_sqlite:
            return None
        self.sqlite_out += 1
        return SqliteJob(self.sqlite_due.popleft())

    def sqlite_written(self, written):
        """A worker wrote a sqlite file, or could not (then OUTPUT_DIR is unusable)."""
        self.sqlite_out -= 1
        if written.error is not None:
            raise OSError(errno.EIO, f"a worker could not write the sqlite file of {written.name}: {written.error}",
                          self.config.output_dir)

    def _frames_per_data_set(self):
        """The frames of the data sets seen so far, on average (0 before any)."""
        seen = len(self.outcomes) + len(self.active)
        return self.frames_known / seen if seen else 0

    def _frames_estimate(self):
        return self.frames_known + round(self._frames_per_data_set() * (len(self.todo) + len(self.indexing)))

    @property
    def all_computed(self):
        """True when every tarball is done, unreadable or incomplete."""
        return not self.todo and not self.active and not self.indexing

    @property
    def all_written(self):
        """True when every tarball is done and every output written."""
        # busy() may end a save and list the sqlite files it leaves due: asked first
        return (self.all_computed and not self.writer.busy() and not self.dirty and not self.sqlite_due
                and not self.writer.saved_complete and not self.sqlite_out)

    # ---- end ------------------------------------------------------------------------------------------
    def interrupt(self, why):
        """Write a last checkpoint and say how to resume (after an interrupting signal).

        The save writes what changed since the last one. Its time is logged: under Open MPI, whose ``mpiexec``
        kills the ranks 0.25 s after passing on SIGTERM, it says how close the save came.
        """
        log.warning("%s: writing a last checkpoint (%d data sets changed since the last save)", why, len(self.dirty))
        started = self.clock()
        self.save_checkpoint(wait=True)
        self.writer.close()
        log.warning("%s: checkpoint written in %.2f s with %d frames done; run the same command again to resume",
                    why, self.clock() - started, self.frames_done)
        self._release()
        return EXIT_INTERRUPTED

    def _release(self):
        """Close the run log and let other runs have OUTPUT_DIR."""
        if self.run_log is not None:
            self.run_log.close()
        self.lock.release()

    def close_run(self, placements=()):
        """Write what is left to write, log the summary, release OUTPUT_DIR, and return the exit status."""
        self.workers_write_sqlite = False  # whatever sqlite file is still due, rank 0 writes
        while self.writer.busy() or self.dirty or self.sqlite_due or self.writer.saved_complete:
            self.tick(force=True)
        self.writer.close()
        if self.progress is not None:
            self._show_progress(force=True)
            self.progress.close()
        wall = self.clock() - self.started
        for line in self.report.lines(wall, placements):
            log.info("%s", line)
        work = None if self.last_result is None else (self.last_result - self.first_handed,
                                                      self.last_result_cpu - self.work_cpu)
        write_json(os.path.join(self.config.output_dir, RUN_SUMMARY),
                   self.report.document(wall, self.settings, self.writer.times.document(), work,
                                        {rank: cpu for rank, cpu in self.node_cpu.items() if rank is not None}))
        status = self.report.exit_status()
        if self.report.lost_ranks:
            log.error("the outputs are complete; ending the job, since rank(s) %s cannot end by themselves (exit "
                      "status %d)", ", ".join(map(str, sorted(self.report.lost_ranks))), status)
        self._release()
        return status


def run_serial(config, computer=None):
    """Run a whole job in this process: the serial twin of :func:`mpicolor.job.mpi.run_job`.

    Returns
    -------
    int
        The exit status.
    """
    coordinator = Coordinator(config, size=1)
    coordinator.open_run()
    coordinator.start_clocks()
    computer = computer or FrameComputer(config)
    try:
        while not coordinator.all_computed:
            chunk = coordinator.next_chunk()
            if chunk is not None:
                coordinator.accept(computer.compute(chunk))
            coordinator.tick()
    finally:
        computer.close()
    return coordinator.close_run()
