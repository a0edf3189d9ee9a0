"""The split rule and device choice, as pure functions."""

import pytest

from mpicolor.placement import is_gpu_rank, parse_split, place, place_rank


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
    placements = [place(rank, rank, (14, 4), 2) for rank in range(18)]
    assert [p.role for p in placements] == ["gpu"] * 4 + ["cpu"] * 14
    assert [p.device for p in placements[:4]] == [0, 1, 0, 1]
    assert all(p.device is None for p in placements[4:])


def test_device_comes_from_the_local_rank():
    # under jsrun each resource set numbers its GPUs from 0: rank 18 is local rank 0 of the second node
    assert place(18, 0, (14, 4), 2).device == 0
    assert place(19, 1, (14, 4), 2).device == 1


def test_gpu_rank_without_gpu_falls_back_with_the_reason():
    calls = []

    def probe():
        calls.append(1)
        return 0, "CuPy is not installed"

    gpu_rank = place_rank(0, 0, (14, 4), None, probe)
    assert gpu_rank.role == "gpu" and gpu_rank.backend == "cpu" and gpu_rank.fallback == "CuPy is not installed"
    cpu_rank = place_rank(5, 5, (14, 4), None, probe)
    assert cpu_rank.role == "cpu" and cpu_rank.fallback is None
    assert len(calls) == 1  # CPU ranks never touch CUDA


def test_usable_gpu_computes_on_it():
    placement = place_rank(1, 1, (14, 4), None, lambda: (2, None))
    assert placement.device == 1 and placement.fallback is None and placement.backend == "gpu"


def test_configured_device_that_is_not_visible_falls_back():
    # --gpus 2 on a node where the runtime sees one device: local rank 1 would ask for device 1
    placement = place_rank(1, 1, (14, 4), 2, lambda: (1, None))
    assert placement.backend == "cpu" and placement.fallback == "device 1 is not visible (1 visible; --gpus 2)"
    assert place_rank(0, 0, (14, 4), 2, lambda: (1, None)).backend == "gpu"
