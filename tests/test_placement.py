"""The split rule and device choice, as pure functions."""

import itertools
from collections import Counter

import pytest

from mpicolor.job.placement import Placement, is_gpu_rank, parse_split, place, place_rank


def test_parse_split():
    assert parse_split("14:4") == (14, 4)
    assert parse_split("1:0") == (1, 0)
    for bad in ("14", "a:b", "0:0", "-1:4", "1:2:3"):
        with pytest.raises(ValueError, match="split="):
            parse_split(bad)


def test_nine_four_is_the_originals_rule():
    # the original ran a worker on a GPU when worker % 13 <= 3
    assert [is_gpu_rank(r, (9, 4)) for r in range(40)] == [r % 13 <= 3 for r in range(40)]


def test_eighteen_ranks_two_gpus_follow_the_rule_exactly():
    placements = [place(rank, range(18), (14, 4), 2) for rank in range(18)]
    assert [p.role for p in placements] == ["gpu"] * 4 + ["cpu"] * 14
    assert [p.device for p in placements[:4]] == [0, 1, 0, 1]
    assert all(p.device is None for p in placements[4:])
    assert [p.local_rank for p in placements] == list(range(18))


def test_device_comes_from_the_node_not_the_global_rank():
    # under jsrun each resource set numbers its GPUs from 0: rank 18 is the first rank of the second node
    second_node = range(18, 36)
    assert place(18, second_node, (14, 4), 2) == Placement(18, 0, "gpu", 0)
    assert place(19, second_node, (14, 4), 2).device == 1


def devices_per_node(ranks, ranks_per_node, split, gpus, layout):
    """``[Counter(device -> GPU ranks)]`` per node, ranks laid out over nodes in blocks or round robin."""
    nodes = -(-ranks // ranks_per_node)
    node_of = (lambda rank: rank // ranks_per_node) if layout == "block" else (lambda rank: rank % nodes)
    members = [[rank for rank in range(ranks) if node_of(rank) == node] for node in range(nodes)]
    return [Counter(place(rank, node, split, gpus).device for rank in node if is_gpu_rank(rank, split))
            for node in members]


def test_every_device_of_a_node_gets_gpu_ranks_evenly_for_any_split_and_gpu_count():
    splits = [(14, 4), (9, 4), (1, 1), (3, 5), (0, 1), (7, 2), (5, 3)]
    for split, gpus, ranks_per_node, layout in itertools.product(splits, range(1, 9), (13, 18, 36, 144),
                                                                 ("block", "round robin")):
        for node, counts in enumerate(devices_per_node(2 * ranks_per_node, ranks_per_node, split, gpus, layout)):
            gpu_ranks = sum(counts.values())
            case = f"split {split}, {gpus} GPUs, {ranks_per_node} ranks per node ({layout}), node {node}: {counts}"
            assert set(counts) == set(range(min(gpus, gpu_ranks))), case  # every device gets work
            assert max(counts.values(), default=0) - min(counts.values(), default=0) <= 1, case  # evenly, within one


def test_the_layouts_of_the_issue():
    # --split 14:4 --gpus 6 on 36 ranks: local ranks 0-3 and 18-21 are GPU ranks; local_rank % 6 left 4 and 5 idle
    assert devices_per_node(36, 36, (14, 4), 6, "block") == [Counter({0: 2, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1})]
    # 144 ranks with 3 GPUs: 32 GPU ranks, not {0: 16, 1: 8, 2: 8}
    assert devices_per_node(144, 144, (14, 4), 3, "block") == [Counter({0: 11, 1: 11, 2: 10})]


def test_gpu_rank_without_gpu_falls_back_with_the_reason():
    calls = []

    def probe():
        calls.append(1)
        return 0, "CuPy is not installed"

    gpu_rank = place_rank(0, range(18), (14, 4), None, probe)
    assert gpu_rank.role == "gpu" and gpu_rank.backend == "cpu" and gpu_rank.fallback == "CuPy is not installed"
    cpu_rank = place_rank(5, range(18), (14, 4), None, probe)
    assert cpu_rank.role == "cpu" and cpu_rank.fallback is None
    assert len(calls) == 1  # CPU ranks never touch CUDA


def test_usable_gpu_computes_on_it():
    placement = place_rank(1, range(18), (14, 4), None, lambda: (2, None))
    assert placement.device == 1 and placement.fallback is None and placement.backend == "gpu"


def test_configured_device_that_is_not_visible_falls_back():
    # --gpus 2 on a node where the runtime sees one device: the second GPU rank would ask for device 1
    placement = place_rank(1, range(18), (14, 4), 2, lambda: (1, None))
    assert placement.backend == "cpu" and placement.fallback == "device 1 is not visible (1 visible; --gpus 2)"
    assert place_rank(0, range(18), (14, 4), 2, lambda: (1, None)).backend == "gpu"
