"""A job of many ranks in one process: the twin of :func:`mpicolor.job.mpi.run_job` that tests drive.

Every rank is an object (rank 0's and the node coordinators' dispatchers, the workers) with a channel of one
:class:`~mpicolor.job.dispatch.LocalNetwork`, stepped in turn until the job ends. The layout, the messages and
every decision are those of an MPI run; only the transport differs, and the ranks take turns instead of
running at once. A rank in ``stuck`` is never stepped: what a hung rank looks like to its coordinator.
"""

from mpicolor.job.coordinator import Coordinator
from mpicolor.job.dispatch import LocalNetwork, Worker, node_dispatcher, root_dispatcher
from mpicolor.job.tiers import node_by_size, role
from mpicolor.job.worker import FrameComputer

HOST = "in-process"


def run_in_process(config, size, stuck=()):
    """Run a whole job of ``size`` ranks in this process; every ``config.node_size`` ranks make a node.

    Returns
    -------
    int
        The exit status rank 0 ends with.
    """
    network = LocalNetwork()
    nodes = [node_by_size(rank, size, config.node_size or size) for rank in range(size)]
    computers = [FrameComputer(config, rank=rank) for rank in range(size)]
    coordinator = Coordinator(config, size, delegate_indexing=size > 1)
    coordinator.open_run()
    root = root_dispatcher(network.channel(0), coordinator, computers[0], size, nodes, [HOST] * size)
    others = {}
    for rank in range(1, size):
        mine = role(rank, size, nodes[rank])
        others[rank] = (node_dispatcher(network.channel(rank), computers[rank], mine, config.stall_timeout, HOST)
                        if mine.is_node_coordinator else Worker(network.channel(rank), computers[rank],
                                                                mine.coordinator))
    running = {rank: member for rank, member in others.items() if rank not in stuck}
    coordinator.start_clocks()
    try:
        while not root.done():
            root.step()
            _step(running)
        code = coordinator.close_run()
        root.stop_peers(code)
        while _step(running):  # the stop travels down the tiers
            pass
    finally:
        for computer in computers:
            computer.close()
    return code


def _step(running):
    """Step every running rank once, passing the stop on from node coordinators whose loop ended; True when
    one of them did something."""
    busy = False
    for rank, member in list(running.items()):
        if isinstance(member, Worker):
            busy |= member.step()
            if member.status is not None:
                del running[rank]
        elif member.done():
            member.stop_peers(member.planner.stopped.status)
            del running[rank]
            busy = True
        else:
            busy |= member.step()
    return busy
