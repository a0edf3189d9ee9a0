"""Everything that talks MPI: the only module that imports mpi4py.

The loops themselves are plain Python over a channel (:mod:`mpicolor.job.dispatch`); here they get an
:class:`MpiChannel` and their roles (:mod:`mpicolor.job.tiers`). On one node rank 0 runs a
:class:`~mpicolor.job.dispatch.Dispatcher` over its :class:`~mpicolor.job.coordinator.Coordinator` and hands
chunks to every worker, computing frames itself while the run is small enough that coordinating leaves it idle.
Across nodes rank 0 hands ranges to one node coordinator per node, which runs a dispatcher over a
:class:`~mpicolor.job.dispatch.NodePlanner` for the ranks of its node. Workers run
:func:`~mpicolor.job.dispatch.work`. An uncaught exception on any rank aborts the whole job, as ``python -m
mpi4py`` does: without that the other ranks would wait forever in a receive.
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
from mpicolor.engine.kernels import warm_up
from mpicolor.job.coordinator import Coordinator
from mpicolor.job.dispatch import POLL_MAX, POLL_MIN, node_dispatcher, root_dispatcher, work
from mpicolor.job.logs import setup_logging
from mpicolor.job.placement import place_rank
from mpicolor.job.protocol import TAGS, Setup
from mpicolor.job.report import EXIT_OUTPUT, EXIT_RANK_FAILED, EXIT_USAGE
from mpicolor.job.tiers import node_by_size, role
from mpicolor.job.worker import FrameComputer
from mpicolor.state.output_dir import OutputError

log = logging.getLogger(__name__)


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
        return tuple(sorted(node.allgather(comm.Get_rank())))
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


class MpiChannel:
    """A rank's channel (`mpicolor.job.dispatch`) over an MPI communicator: non-blocking sends it keeps until they
    complete, and a poll that never blocks (MPICH's blocking receive spins a core)."""

    def __init__(self, comm):
        self.comm = comm
        self.status = MPI.Status()
        self.sends = []  # (rank, request) of sends not yet complete

    def poll(self):
        if not self.comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=self.status):
            return None
        source, tag = self.status.Get_source(), self.status.Get_tag()
        return source, self.comm.recv(source=source, tag=tag)

    def send(self, rank, message):
        self.sends.append((rank, self.comm.isend(message, dest=rank, tag=TAGS[type(message)])))

    def progress(self):
        if self.sends:
            self.sends = [(rank, request) for rank, request in self.sends if not request.Test()]

    def drop(self, rank):
        self.sends = [(to, request) for to, request in self.sends if to != rank]

    def flush(self):
        wait_quietly([request for _, request in self.sends])
        self.sends = []


def tell(comm, message, ranks):
    """Send one message to each of ``ranks`` and wait until it is sent."""
    channel = MpiChannel(comm)
    for rank in ranks:
        channel.send(rank, message)
    channel.flush()


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
    coordinator = None
    if rank == 0:
        try:
            config = make_config()
            coordinator = Coordinator(config, size, delegate_indexing=size > 1)
            coordinator.open_run()
            setup = Setup(config)
        except ValueError as error:
            log.error("%s", error)
            setup = Setup(failed=EXIT_USAGE)
        except (OutputError, OSError) as error:
            log.error("%s", error)
            setup = Setup(failed=EXIT_OUTPUT)
        tell(comm, setup, range(1, size))
    else:
        setup = wait_for_root(comm, TAGS[Setup])
    config = setup.config
    if config is None:
        return setup.failed
    shared = node_ranks(comm)
    placement = _placement(rank, shared, config)
    node = shared if config.node_size is None else node_by_size(rank, size, config.node_size)
    everyone = comm.gather((placement, socket.gethostname(), node), root=0)
    computer = FrameComputer(config, placement.backend, rank, device=placement.device)
    if config.simulate is None:
        # compile or load the kernels before the clock starts, so that frame rates are frame rates
        seconds = warm_up()
        if rank == 0:
            log.info("numba kernels ready in %.1f s (a first run compiles them once into the cache)", seconds)
    try:
        if rank == 0:
            return _coordinate(comm, coordinator, computer, everyone, interrupted)
        mine = role(rank, size, node)
        if not mine.is_node_coordinator:
            return work(MpiChannel(comm), computer, mine.coordinator)
        dispatcher = node_dispatcher(MpiChannel(comm), computer, mine, config.stall_timeout, socket.gethostname())
        dispatcher.serve()
        status = dispatcher.planner.stopped.status
        dispatcher.stop_peers(status)
        return status
    finally:
        computer.close()


def _coordinate(comm, coordinator, computer, everyone, interrupted):
    """Rank 0's part: serve the workers, or across nodes the node coordinators, until every output is written;
    returns the exit status."""
    config = coordinator.config
    placements, hosts, nodes = zip(*everyone)
    dispatcher = root_dispatcher(MpiChannel(comm), coordinator, computer, comm.Get_size(), nodes, hosts, interrupted)
    log.info("%d ranks (%d GPU ranks by the split %d:%d), MPI: %s", comm.Get_size(),
             sum(p.role == "gpu" for p in placements), *config.split, library_version())
    coordinator.start_clocks()
    try:
        interruption = dispatcher.serve()
        if interruption is not None:
            abort(comm, interruption)
        code = coordinator.close_run(placements)
    except OSError as error:
        # a full disk or a vanished OUTPUT_DIR: the previous checkpoint generation is intact
        log.error("cannot write to OUTPUT_DIR %s: %s (%s); the last checkpoint is intact: free the space or fix "
                  "the folder, then run the same command again to resume", config.output_dir,
                  error.strerror or error, error.filename or "")
        abort(comm, EXIT_OUTPUT)
    # the others are told to stop only now: they would otherwise wait in a spinning collective
    dispatcher.stop_peers(code)
    if coordinator.report.lost_ranks:  # they cannot end by themselves
        abort(comm, code)
    return code


def _placement(rank, node, config):
    placement = place_rank(rank, node, config.split, config.gpus, probe_gpus)
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
