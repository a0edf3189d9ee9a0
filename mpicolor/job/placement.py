"""Which rank computes on a GPU and on which device: pure functions of rank, size and configuration."""

from dataclasses import dataclass, replace


def parse_split(text):
    """Parse the CPU:GPU split rule ``"C:G"``.

    Parameters
    ----------
    text : str
        Two non-negative integers joined by a colon, e.g. ``"14:4"``; at least one must be positive.

    Returns
    -------
    (int, int)
        The CPU and GPU parts of every cycle of ``C + G`` ranks.
    """
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"split={text!r} should be two non-negative integers 'C:G', e.g. '14:4'")
    cpu, gpu = (int(p) for p in parts)
    if cpu + gpu == 0:
        raise ValueError(f"split={text!r} should have C + G >= 1")
    return cpu, gpu


def is_gpu_rank(rank, split):
    """Rank ``r`` is a GPU rank when ``r % (C + G) < G`` (``9:4`` is the original's ``worker % 13 <= 3``)."""
    cpu, gpu = split
    return rank % (cpu + gpu) < gpu


def gpu_device(rank, node_ranks, split, gpus):
    """The device of a GPU rank: its position among its node's GPU ranks modulo the node's GPUs (None without).

    Counting the node's GPU ranks, not all its ranks, gives every device work and each the same number of
    ranks, give or take one, whatever the split and the GPU count (``local_rank % gpus`` would leave devices
    4 and 5 of 6 idle under ``14:4``, whose GPU ranks are local ranks 0 to 3 and 18 to 21).
    """
    if not gpus:
        return None
    return [other for other in node_ranks if is_gpu_rank(other, split)].index(rank) % gpus


@dataclass(frozen=True)
class Placement:
    """Where one rank computes.

    ``role`` is what the split rule asks for (``"cpu"`` or ``"gpu"``); ``device`` the CUDA device of a GPU
    rank; ``fallback`` is None when the rank computes where its role says, else why a GPU rank uses the CPU.
    """

    rank: int
    local_rank: int
    role: str
    device: int | None
    fallback: str | None = None

    @property
    def backend(self):
        """``"gpu"`` when this rank really computes on its GPU, else ``"cpu"``."""
        return "gpu" if self.role == "gpu" and self.fallback is None else "cpu"


def place(rank, node_ranks, split, gpus):
    """The placement the split rule gives, before checking that a GPU is usable.

    Parameters
    ----------
    rank : int
        Global rank, which decides the role.
    node_ranks : sequence of int
        Global ranks of the ranks on this rank's node, ascending (``rank`` among them); the device comes from
        them (:func:`gpu_device`), never from the global rank alone: LSF's jsrun numbers each resource set's
        GPUs from 0.
    split : (int, int)
        The ``C:G`` rule from :func:`parse_split`.
    gpus : int or None
        GPUs visible on the node.
    """
    local_rank = list(node_ranks).index(rank)
    if not is_gpu_rank(rank, split):
        return Placement(rank, local_rank, "cpu", None)
    device = gpu_device(rank, node_ranks, split, gpus)
    fallback = None if device is not None else "no GPU visible"
    return Placement(rank, local_rank, "gpu", device, fallback)


def place_rank(rank, node_ranks, split, gpus, probe):
    """The placement of one rank after checking its GPU.

    Parameters
    ----------
    rank, node_ranks, split
        As for :func:`place`.
    gpus : int or None
        GPUs per node as configured; None takes the count ``probe`` finds.
    probe : callable
        Returns ``(count, reason)`` of usable devices (see :func:`mpicolor.engine.devices.probe_gpus`); called only
        for GPU ranks, so that CPU ranks never initialise CUDA.

    Returns
    -------
    Placement
        A GPU rank whose device is usable has ``fallback`` None and computes on it; otherwise ``fallback``
        says why it computes on the CPU.
    """
    if not is_gpu_rank(rank, split):
        return place(rank, node_ranks, split, gpus)
    count, reason = probe()
    placement = place(rank, node_ranks, split, count if gpus is None else gpus)
    if reason is None and placement.device is not None and placement.device >= count:
        reason = f"device {placement.device} is not visible ({count} visible; --gpus {gpus})"
    return replace(placement, fallback=reason or placement.fallback)
