"""Who coordinates whom: the node tier, as pure functions of a rank, the job's size and the ranks of its node.

On one node the run is flat: rank 0 hands chunks to every other rank. When the job spans several nodes, each
node's lowest rank (the next one on rank 0's node) is its *node coordinator*: rank 0 hands it ranges of many
chunks, it cuts them into chunks for the ranks of its node and returns their results in few, large batches. Rank
0's messages then grow with the nodes, not with the ranks, as a Parsl manager or a Work Queue foreman does.
"""

from dataclasses import dataclass

# A coordinator computes frames too, between messages, when it and the ranks it serves are at most this many;
# beyond, serving them is its job (a frame of `--method seed` takes seconds, and its ranks would wait that long).
COMPUTES_UP_TO = 16


def coordinator_computes(peers):
    """Whether a coordinator of ``peers`` ranks computes frames too."""
    return peers + 1 <= COMPUTES_UP_TO


def node_by_size(rank, size, node_size):
    """The ranks of ``rank``'s node when every ``node_size`` consecutive ranks make a node (``--node-size``).

    Returns
    -------
    tuple of int
        Ascending.
    """
    if node_size < 1:
        raise ValueError(f"node_size={node_size} should be >= 1")
    first = rank - rank % node_size
    return tuple(range(first, min(first + node_size, size)))


@dataclass(frozen=True)
class Role:
    """What one rank does in the tiers.

    Attributes
    ----------
    rank : int
    coordinator : int or None
        The rank it takes orders from and answers (None for rank 0).
    peers : tuple of int
        The ranks it coordinates, ascending: every other rank (rank 0 of a flat run), the node coordinators
        (rank 0 of a tiered run), the other ranks of its node (a node coordinator), none (a worker).
    computes : bool
        Whether it computes frames itself: a worker always, a coordinator of few ranks between messages.
    tiered : bool
        Whether the job spans several nodes.
    """

    rank: int
    coordinator: int | None
    peers: tuple
    computes: bool
    tiered: bool

    @property
    def is_node_coordinator(self):
        return self.tiered and self.coordinator == 0


def node_coordinator(node):
    """The node coordinator of a node (its ranks, ascending): its lowest rank but rank 0, or None for a node
    of rank 0 alone."""
    others = [rank for rank in node if rank != 0]
    return others[0] if others else None


def role(rank, size, node, nodes=None):
    """The `Role` of ``rank``.

    Parameters
    ----------
    rank, size : int
    node : tuple of int
        The ranks of ``rank``'s node, ascending.
    nodes : list of tuple of int, optional
        Every node's ranks; needed for rank 0 of a tiered run, whose peers are the node coordinators.
    """
    tiered = len(node) < size
    if not tiered:
        peers = tuple(range(1, size)) if rank == 0 else ()
        return Role(rank, None if rank == 0 else 0, peers, rank != 0 or coordinator_computes(len(peers)), False)
    if rank == 0:
        if nodes is None:
            raise ValueError("rank 0 of a run across several nodes needs every node's ranks")
        leads = sorted({lead for lead in map(node_coordinator, nodes) if lead is not None})
        return Role(0, None, tuple(leads), False, True)
    lead = node_coordinator(node)
    if rank != lead:
        return Role(rank, lead, (), True, True)
    peers = tuple(other for other in node if other not in (0, rank))
    return Role(rank, 0, peers, coordinator_computes(len(peers)), True)


def capacity(role_of_peer):
    """The ranks a peer computes with: 1 for a worker, its node's computing ranks for a node coordinator."""
    return len(role_of_peer.peers) + role_of_peer.computes


def rank_0_peers(size, nodes):
    """Rank 0's peers, and across nodes each node coordinator's node.

    Parameters
    ----------
    size : int
    nodes : list of tuple of int
        Every node's ranks (repeats are ignored).

    Returns
    -------
    capacities : dict of int to int
        Each peer and the ranks it computes with.
    node_of : dict of int to tuple of int
        Each node coordinator's node (empty for a flat run).
    """
    nodes = list(dict.fromkeys(nodes))
    mine = role(0, size, nodes[0] if len(nodes) == 1 else next(node for node in nodes if 0 in node), nodes)
    if not mine.tiered:
        return dict.fromkeys(mine.peers, 1), {}
    node_of = {node_coordinator(node): node for node in nodes if node_coordinator(node) is not None}
    return {lead: capacity(role(lead, size, node_of[lead])) for lead in mine.peers}, node_of


def ranks_text(ranks):
    """Ranks for the log: ``"5-8"`` when consecutive, else ``"1, 2, 4"``."""
    ranks = sorted(ranks)
    if len(ranks) > 2 and ranks[-1] - ranks[0] == len(ranks) - 1:
        return f"{ranks[0]}-{ranks[-1]}"
    return ", ".join(map(str, ranks))
