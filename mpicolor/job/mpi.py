"""Everything that talks MPI: the only module that imports mpi4py.

Rank 0 runs a :class:`Server`: it hands out chunks of frames, keeps every worker two chunks ahead so that none
waits for its next assignment, gathers the results into the :class:`~mpicolor.job.coordinator.Coordinator`, and
computes frames itself between messages while the run is small enough that coordinating leaves it idle.
Workers run :func:`work`. Frame ids travel in the payload, never in tags (only tags up to 32767 are
guaranteed). An uncaught exception on any rank aborts the whole job, as ``python -m mpi4py`` does: without
that the other ranks would wait forever in a receive.
"""

import logging
import os
import signal
import socket
import sys
import time
import traceback

from mpi4py import MPI

from mpicolor.engine.devices import probe_gpus
from mpicolor.job.coordinator import Coordinator, SqliteJob
from mpicolor.job.logs import setup_logging
from mpicolor.job.placement import place_rank
from mpicolor.job.report import EXIT_OUTPUT, EXIT_RANK_FAILED, EXIT_USAGE
from mpicolor.job.schedule import WorkerLedger
from mpicolor.job.worker import Chunk, FrameComputer, index_for_coordinator
from mpicolor.engine.kernels import warm_up
from mpicolor.state.checkpoint import DamagedCheckpoint
from mpicolor.state.output_dir import OutputError
from mpicolor.state.sqlite import write_sqlite_from_checkpoint

log = logging.getLogger(__name__)

TAG_WORK, TAG_RESULT, TAG_STOP, TAG_INDEX, TAG_INDEXED, TAG_SETUP, TAG_SQLITE, TAG_SQLITE_WRITTEN = range(11, 19)
# chunks a worker holds ahead of the one it computes
DEPTH = 2
# rank 0 computes frames too up to this many ranks; beyond, serving them is its job
RANK0_COMPUTES_UP_TO = 16
# back-off of the polling loops: MPICH's blocking receive spins a core, which would starve the others
POLL_MIN, POLL_MAX = 0.0002, 0.005
# seconds between checks for stalled workers
STALL_CHECK = 0.5


def world():
    """``(comm, rank, size)`` of MPI_COMM_WORLD."""
    comm = MPI.COMM_WORLD
    return comm, comm.Get_rank(), comm.Get_size()


def node_ranks(comm):
    """Global ranks of the ranks sharing this rank's node, ascending (an MPI_COMM_TYPE_SHARED split, an allgather).

    Collective: every rank of ``comm`` calls it.
    """
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return sorted(node.allgather(comm.Get_rank()))
    finally:
        node.Free()


def library_version():
    """The MPI library's own version line, e.g. ``MPICH Version: 4.3.0``.

    Open MPI's string ends in the C string's NUL byte, which would make every log that holds it binary.
    """
    return MPI.Get_library_version().replace("\0", "").strip().splitlines()[0]


def abort(comm, code):
    """End every rank of the job now, this process included."""
    # the launcher forwards output through pipes: give it a moment to pass on the last log lines
    sys.stderr.flush()
    time.sleep(0.5)
    comm.Abort(code)
    os._exit(code)  # MPI_Abort may return in the calling process (seen with MPICH 5)


# Signals that interrupt a run: rank 0 writes a last checkpoint and ends the job with status 4. SIGUSR1 is the
# warning to send ahead of a time limit: MPICH's and Open MPI's mpiexec both pass it to every rank and leave the
# job running, whereas Open MPI's mpiexec answers SIGTERM and SIGINT by killing every rank 0.5 s later.
INTERRUPTING = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class Interrupted:
    """Remembers an interrupting signal on rank 0 so that the loop can checkpoint and stop."""

    def __init__(self):
        self.signal = None

    def __call__(self, number, frame):
        self.signal = signal.Signals(number).name


def catch_interruptions(rank):
    """Set what the interrupting signals do: rank 0 remembers them (the returned :class:`Interrupted`, checked by
    its loop), every other rank ignores them, since rank 0 decides what they mean and ends the job.

    Set at once when the job starts, so that a signal during start-up (numba's first compile takes a minute)
    is neither lost nor fatal: the default action of SIGUSR1 is to end the process.
    """
    interrupted = Interrupted()
    for number in INTERRUPTING:
        signal.signal(number, interrupted if rank == 0 else signal.SIG_IGN)
    return interrupted


class Server:
    """Rank 0's side of a run: one named step per concern, run in turn by :meth:`serve`.

    As mpi4py.futures' manager loop: it never blocks in MPI (iprobe, and a back-off sleep when idle), keeps
    every worker DEPTH chunks ahead, and tracks in a :class:`~mpicolor.job.schedule.WorkerLedger` what each
    worker holds. A worker silent longer than ``--stall-timeout`` with work in hand is given up on: its work
    goes to the others, its late answers are dropped, and it gets nothing more.

    Parameters
    ----------
    comm : MPI.Comm
    coordinator : mpicolor.job.coordinator.Coordinator
    computer : mpicolor.job.worker.FrameComputer
        Rank 0's own, for the frames it computes between messages.
    rank0_computes : bool
        Whether rank 0 computes frames too (small runs).
    hosts : list of str
        Every rank's host, for the log.
    interrupted : Interrupted
        What :func:`catch_interruptions` remembers.
    """

    def __init__(self, comm, coordinator, computer, rank0_computes, hosts, interrupted):
        self.comm, self.coordinator, self.computer, self.hosts = comm, coordinator, computer, hosts
        self.rank0_computes = rank0_computes
        self.ledger = WorkerLedger(range(1, comm.Get_size()))
        self.sends = []                   # (rank, request) of sends not yet complete
        self.own = None                   # rank 0's own chunk in progress (a generator of its frames)
        self.status = MPI.Status()
        self.interrupted = interrupted
        self.next_stall_check = time.monotonic() + STALL_CHECK

    def serve(self):
        """Run until every frame is computed and every output written; returns the ranks given up on.

        After an interrupting signal it writes a last checkpoint and ends the job with status 4.
        """
        pause = POLL_MIN
        while True:
            busy = self.receive()
            self.hand_out()
            self.forget_completed_sends()
            self.stop_if_interrupted()
            self.give_up_on_stalled()
            self.coordinator.tick()
            if not busy:
                busy = self.compute_own_frame()
            if self.coordinator.all_written and self.own is None and self.ledger.idle():
                break
            pause = POLL_MIN if busy else min(2 * pause, POLL_MAX)
            if not busy:
                time.sleep(pause)
        wait_quietly([request for _, request in self.sends])
        return self.ledger.lost

    def receive(self):
        """Take in every waiting message; True when there was one."""
        busy = False
        while self.comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=self.status):
            source, tag = self.status.Get_source(), self.status.Get_tag()
            message = self.comm.recv(source=source, tag=tag)
            busy = True
            if tag == TAG_INDEXED:
                key = ("index", message.number)
            elif tag == TAG_SQLITE_WRITTEN:
                key = ("sqlite", message[0])
            else:
                key = ("chunk", message.chunk_id)
            if not self.ledger.returned(source, key):
                continue  # the late answer of a rank given up on: its work was handed to others
            if tag == TAG_INDEXED:
                self.coordinator.indexed(message)
            elif tag == TAG_SQLITE_WRITTEN:
                self.coordinator.sqlite_written(*message)
            else:
                self.coordinator.accept(message)
        return busy

    def _send(self, rank, key, work, tag):
        self.sends.append((rank, self.comm.isend(work, dest=rank, tag=tag)))
        self.ledger.hand(rank, key, work)

    def hand_out(self):
        """Keep every worker DEPTH chunks ahead; give the least loaded a tarball to index when one is due, and
        the sqlite files to write."""
        for rank in self.ledger.ranks():
            while self.ledger.count(rank) < DEPTH:
                chunk = self.coordinator.next_chunk()
                if chunk is None:
                    break
                self._send(rank, ("chunk", chunk.chunk_id), chunk, TAG_WORK)
        if not self.ledger.ranks():
            return
        job = self.coordinator.index_job()
        if job is not None:
            # the least loaded worker indexes the next tarball while the others compute
            self._send(self.ledger.least_loaded(), ("index", job[0]), job, TAG_INDEX)
        while (job := self.coordinator.sqlite_job()) is not None:
            # a sqlite file costs 0.4 s per 44,470 frames: written by workers, it costs rank 0 nothing
            self._send(self.ledger.least_loaded(), ("sqlite", job.name), job, TAG_SQLITE)

    def forget_completed_sends(self):
        self.sends = [(rank, request) for rank, request in self.sends if not request.Test()]

    def stop_if_interrupted(self):
        """After an interrupting signal: a last checkpoint, then the job ends with status 4."""
        if self.interrupted.signal:
            abort(self.comm, self.coordinator.interrupt(f"interrupted by {self.interrupted.signal}"))

    def give_up_on_stalled(self):
        """Give up on every worker silent for longer than ``--stall-timeout`` (checked every STALL_CHECK s)."""
        if time.monotonic() < self.next_stall_check:
            return
        self.next_stall_check = time.monotonic() + STALL_CHECK
        timeout = self.coordinator.config.stall_timeout
        for rank, silent, work in self.ledger.stalled(timeout):
            self.coordinator.rank_lost(rank, f"on {self.hosts[rank]} held {_work_text(work)} for {silent:.0f} s "
                                             f"without answering (--stall-timeout {timeout:g})", self.ledger.lose(rank))
            # a send a stuck rank never receives never completes: stop waiting for it
            self.sends = [(to, request) for to, request in self.sends if to != rank]
        if not self.ledger.ranks():  # with no worker left, rank 0 computes and writes the sqlite files itself
            self.rank0_computes, self.coordinator.workers_write_sqlite = True, False

    def compute_own_frame(self):
        """One frame of rank 0's own chunk, when it computes and no message waits (coordinating comes first);
        True when it computed one."""
        if not self.rank0_computes:
            return False
        if self.own is None:
            chunk = self.coordinator.next_chunk()
            if chunk is None:
                return False
            self.own = self.computer.steps(chunk)
        try:
            next(self.own)
        except StopIteration as finished:
            self.coordinator.accept(finished.value)
            self.own = None
        return True


def _work_text(work):
    """A worker's work in words, for the log."""
    if isinstance(work, Chunk):
        frames = len(work.positions)
        return f"chunk {work.chunk_id} ({frames} frame{'s' * (frames != 1)} of {os.path.basename(work.path)})"
    if isinstance(work, SqliteJob):
        return f"the sqlite file of {work.name}"
    return f"the indexing of {os.path.basename(work[1])}"


def tell_workers(comm, message, tag, skip=()):
    """Send one message to every other rank but ``skip`` (each waits for it with :func:`wait_for_root`)."""
    wait_quietly([comm.isend(message, dest=rank, tag=tag) for rank in range(1, comm.Get_size()) if rank not in skip])


def wait_quietly(requests):
    """Wait for sends to complete, sleeping between tests: MPICH's Wait spins, and 31 ranks spinning while
    rank 0 writes a checkpoint would take the cores it needs."""
    pause = POLL_MIN
    while not MPI.Request.Testall(requests):
        time.sleep(pause)
        pause = min(2 * pause, POLL_MAX)


def wait_for_root(comm, tag):
    """Receive rank 0's message with ``tag``, sleeping between probes.

    A blocking receive or collective spins in MPICH: ranks waiting while rank 0 writes its outputs would
    take the cores rank 0 needs (seen: a 0.15 s final checkpoint took 2 s with 31 ranks spinning).
    """
    pause = POLL_MIN
    while not comm.iprobe(source=0, tag=tag):
        time.sleep(pause)
        pause = min(2 * pause, POLL_MAX)
    return comm.recv(source=0, tag=tag)


def work(comm, computer):
    """A worker's loop: compute chunks and index tarballs until rank 0 says stop; returns the exit status that
    rank 0 sends with the stop."""
    status = MPI.Status()
    sending = None
    pause = POLL_MIN
    while True:
        if not comm.iprobe(source=0, tag=MPI.ANY_TAG, status=status):
            time.sleep(pause)
            pause = min(2 * pause, POLL_MAX)
            continue
        pause = POLL_MIN
        tag = status.Get_tag()
        message = comm.recv(source=0, tag=tag)
        if tag == TAG_STOP:
            break
        if tag == TAG_INDEX:
            reply, reply_tag = index_for_coordinator(*message), TAG_INDEXED
        elif tag == TAG_SQLITE:
            reply, reply_tag = (message.name, _write_sqlite(computer.config, message.name)), TAG_SQLITE_WRITTEN
        else:
            reply, reply_tag = computer.compute(message), TAG_RESULT
        if sending is not None:
            wait_quietly([sending])
        sending = comm.isend(reply, dest=0, tag=reply_tag)
    if sending is not None:
        wait_quietly([sending])
    return message


def _write_sqlite(config, name):
    """Write tarball ``name``'s sqlite file from its checkpoint file; None, or why it could not be written."""
    try:
        write_sqlite_from_checkpoint(config.output_dir, [name], config.stored_settings())
    except (OSError, DamagedCheckpoint) as error:
        return str(error)
    return None


def run_job(make_config):
    """``mpicolor run`` on every rank.

    Parameters
    ----------
    make_config : callable
        Returns the validated :class:`~mpicolor.job.config.RunConfig`; called on rank 0 only, and may raise
        ValueError for a bad setting.

    Returns
    -------
    int
        The exit status (the same on every rank).
    """
    comm, rank, size = world()
    interrupted = catch_interruptions(rank)
    setup_logging(rank, size)
    try:
        return _run_job(comm, rank, size, make_config, interrupted)
    except BaseException:
        log.critical("rank %d on %s failed; aborting the job:\n%s", rank, socket.gethostname(),
                     traceback.format_exc())
        abort(comm, EXIT_RANK_FAILED)


def _run_job(comm, rank, size, make_config, interrupted):
    rank0_computes = size <= RANK0_COMPUTES_UP_TO
    coordinator = None
    if rank == 0:
        try:
            config = make_config()
            coordinator = Coordinator(config, size if rank0_computes else size - 1, delegate_indexing=size > 1)
            coordinator.open_run()
            setup = (config, None)
        except ValueError as error:
            log.error("%s", error)
            setup = (None, EXIT_USAGE)
        except (OutputError, OSError) as error:
            log.error("%s", error)
            setup = (None, EXIT_OUTPUT)
        tell_workers(comm, setup, TAG_SETUP)
    else:
        setup = wait_for_root(comm, TAG_SETUP)
    config, failed = setup
    if config is None:
        return failed
    placement = _placement(comm, rank, config)
    placements = comm.gather(placement, root=0)
    hosts = comm.gather(socket.gethostname(), root=0)
    computer = FrameComputer(config, placement.backend, rank, device=placement.device)
    if config.simulate is None:
        # compile or load the kernels before the clock starts, so that frame rates are frame rates
        seconds = warm_up()
        if rank == 0:
            log.info("numba kernels ready in %.1f s (a first run compiles them once into the cache)", seconds)
    try:
        if rank == 0:
            log.info("%d ranks (%d GPU ranks by the split %d:%d), MPI: %s", size,
                     sum(p.role == "gpu" for p in placements), *config.split, library_version())
            coordinator.start_clocks()
            try:
                lost = Server(comm, coordinator, computer, rank0_computes, hosts, interrupted).serve()
                code = coordinator.close_run(placements)
                # workers are told to stop only now: they would otherwise wait in a spinning collective
                tell_workers(comm, code, TAG_STOP, skip=lost)
                if lost:  # they cannot end by themselves
                    abort(comm, code)
            except OSError as error:
                # a full disk or a vanished OUTPUT_DIR: the previous checkpoint generation is intact
                log.error("cannot write to OUTPUT_DIR %s: %s (%s); the last checkpoint is intact: free the "
                          "space or fix the folder, then run the same command again to resume",
                          config.output_dir, error.strerror or error, error.filename or "")
                abort(comm, EXIT_OUTPUT)
        else:
            code = work(comm, computer)
    finally:
        computer.close()
    return code


def _placement(comm, rank, config):
    placement = place_rank(rank, node_ranks(comm), config.split, config.gpus, probe_gpus)
    if placement.fallback is not None:
        log.warning("GPU rank computing on the CPU: %s (--split 1:0 makes every rank a CPU rank)",
                    placement.fallback)
    return placement


def round_robin(items):
    """The share of ``items`` this rank takes in simple SPMD tools (``pack``): every size-th item from its rank.

    Returns
    -------
    rank, size : int
    mine : list
    """
    comm, rank, size = world()
    return rank, size, list(items)[rank::size]


def gather_to_root(value):
    """Gather one value per rank to rank 0: a list there, None elsewhere."""
    comm, rank, size = world()
    return comm.gather(value, root=0)
