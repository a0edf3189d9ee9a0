"""The node tier in process, without mpiexec: who coordinates whom, a node coordinator's decisions, whole jobs
of many ranks over a local network (flat and tiered giving one rank's outputs), and stalls at both tiers."""

import dataclasses
import logging

import numpy as np
import pytest

from helpers import Clock, outputs, simulated_config, tiny_tarballs
from mpicolor.job.coordinator import run_serial
from mpicolor.job.dispatch import FLUSH_SECONDS, Dispatcher, NodePlanner
from mpicolor.job.inprocess import run_in_process
from mpicolor.job.protocol import (Alive, Chunk, ChunkResult, Cut, IndexJob, RankStats, SqliteJob, SqliteWritten,
                                   Stop)
from mpicolor.job.report import EXIT_OK, EXIT_RANK_LOST
from mpicolor.job.tiers import Role, capacity, node_by_size, rank_0_peers, ranks_text, role
from mpicolor.state.results import CPU


def test_one_node_is_flat_and_rank_0_computes_while_it_serves_few_ranks():
    assert role(0, 4, (0, 1, 2, 3)) == Role(0, None, (1, 2, 3), True, False)
    assert role(2, 4, (0, 1, 2, 3)).coordinator == 0 and role(2, 4, (0, 1, 2, 3)).computes
    assert not role(0, 17, tuple(range(17))).computes  # 16 workers: serving them is its job
    assert rank_0_peers(4, [(0, 1, 2, 3)] * 4) == ({1: 1, 2: 1, 3: 1}, {})


def test_across_nodes_each_node_has_a_coordinator_and_rank_0_serves_only_them():
    size = 8
    nodes = [node_by_size(rank, size, 3) for rank in range(size)]
    assert nodes[:4] == [(0, 1, 2), (0, 1, 2), (0, 1, 2), (3, 4, 5)] and nodes[7] == (6, 7)
    root = role(0, size, nodes[0], nodes)
    assert root.tiered and root.peers == (1, 3, 6) and not root.computes
    lead = role(1, size, nodes[1])  # rank 0's node: the next rank coordinates it
    assert lead.is_node_coordinator and lead.peers == (2,) and lead.computes and capacity(lead) == 2
    assert role(4, size, nodes[4]).coordinator == 3 and not role(4, size, nodes[4]).is_node_coordinator
    assert rank_0_peers(size, nodes) == ({1: 2, 3: 3, 6: 2}, {1: (0, 1, 2), 3: (3, 4, 5), 6: (6, 7)})
    # a node of rank 0 alone has no coordinator; a node of 17 ranks has one that only serves
    assert rank_0_peers(3, [(0,), (1, 2), (1, 2)]) == ({1: 2}, {1: (1, 2)})
    big = role(1, 40, tuple(range(1, 18)))
    assert big.is_node_coordinator and not big.computes and capacity(big) == 16
    assert ranks_text([5, 6, 7, 8]) == "5-8" and ranks_text([1, 2, 4]) == "1, 2, 4"
    with pytest.raises(ValueError, match="node_size=0 should be >= 1"):
        node_by_size(0, 4, 0)


def a_range(chunk_id, frames, tarball=0):
    positions = np.arange(frames, dtype=np.int64)
    return Chunk(chunk_id, tarball, f"/data/set{tarball}.tar", positions, 512 * positions + 512,
                 np.full(frames, 100, np.int64))


def computed(chunk, rank, seconds_per_frame=0.01):
    n = len(chunk.positions)
    return ChunkResult(chunk.chunk_id, chunk.tarball, chunk.positions, np.full((n, 5), rank, np.uint32),
                       np.full((n, 5), 0.2, np.float32), np.full(n, CPU, np.uint8),
                       stats={rank: RankStats(n, n * seconds_per_frame, {"cpu": n})})


class Sent(list):
    """What a planner sent, as (rank, message)."""

    def __call__(self, rank, message):
        self.append((rank, message))


def planner(clock, size=3):
    sent = Sent()
    # the process had spent 10 s when the planner began, 11.5 s ever after: the planner reports 1.5 s
    process_time = iter([10.0] + [11.5] * 100).__next__
    return NodePlanner(sent, 0, size, computer=None, stall_timeout=60.0, clock=clock, process_time=process_time), sent


def test_a_node_coordinator_cuts_its_ranges_into_chunks_and_returns_each_range_whole():
    clock = Clock()
    node, sent = planner(clock)
    node.order(0, a_range(7, 30))
    node.order(0, a_range(8, 10, tarball=1))
    chunks = [node.next_chunk(1)]
    assert len(chunks[0].positions) == 1  # a frame's cost is not known yet
    node.schedule.observe(frames=100, seconds=1.0)  # then a quarter second of work: 25 frames
    while (chunk := node.next_chunk(1)) is not None:
        chunks.append(chunk)
    assert [(chunk.tarball, len(chunk.positions)) for chunk in chunks] == [(0, 1), (0, 25), (0, 4), (1, 10)]
    assert len({chunk.chunk_id for chunk in chunks}) == 4
    # rank 0 hears that each range is all handed out, so that it sends the next
    assert sent == [(0, Cut(7)), (0, Cut(8))]
    del sent[:]
    for chunk in reversed(chunks):  # answers come in any order
        node.answered(chunk.chunk_id % 2 + 1, computed(chunk, rank=chunk.chunk_id % 2 + 1))
    assert [(rank, message.chunk_id, message.last) for rank, message in sent] == [(0, 8, True), (0, 7, True)]
    batch = sent[1][1]
    assert sorted(batch.positions.tolist()) == list(range(30)) and batch.cpu == 1.5
    assert set(batch.stats) == {1, 2} and sum(stats.frames for stats in batch.stats.values()) == 30
    assert batch.packed[np.argsort(batch.positions)][:, 0].tolist() == [
        next(c.chunk_id % 2 + 1 for c in chunks if position in c.positions) for position in range(30)]


def test_once_rank_0_sends_its_last_range_a_node_splits_what_it_holds_so_that_its_ranks_finish_together():
    node, sent = planner(Clock())
    node.schedule.observe(frames=100, seconds=1.0)
    node.order(0, a_range(7, 100))
    assert len(node.next_chunk(1).positions) == 25
    node.order(0, dataclasses.replace(a_range(8, 40, tarball=1), last=True))
    lengths = []
    while (chunk := node.next_chunk(1)) is not None:
        lengths.append(len(chunk.positions))
    assert lengths[:3] == [20, 16, 14]  # 115, 95, then 79 frames over 2 x 3 ranks
    assert sum(lengths) == 115 and lengths[-1] == 1


def test_a_range_still_computed_returns_interim_batches_and_a_last_one():
    clock = Clock()
    node, sent = planner(clock)
    node.order(0, a_range(3, 60))
    first, second = node.next_chunk(1), node.next_chunk(1)
    node.answered(1, computed(first, 1))
    node.tick()
    assert sent == []  # a batch a second, not a message a chunk
    clock.now += FLUSH_SECONDS
    node.tick()
    assert [(m.chunk_id, m.last, len(m.positions)) for _, m in sent] == [(3, False, len(first.positions))]
    node.answered(2, computed(second, 2))
    while (chunk := node.next_chunk(1)) is not None:
        node.answered(1, computed(chunk, 1))
    assert (0, Cut(3)) in sent
    assert sent[-1][1].last and len(sent[-1][1].positions) == 60 - len(first.positions)


def test_a_lost_rank_s_chunks_go_to_the_others_and_rank_0_hears_of_it():
    clock = Clock()
    node, sent = planner(clock)
    node.order(0, a_range(3, 12))
    node.order(0, IndexJob(4, "/data/set4.tar"))
    chunk, job = node.next_chunk(1), node.next_job()
    assert job == IndexJob(4, "/data/set4.tar") and node.next_job() is None
    node.rank_lost(2, "on host held chunk 0 for 700 s", [chunk, job])
    again = node.next_chunk(1)
    assert again.positions.tolist() == chunk.positions.tolist() and again.chunk_id != chunk.chunk_id
    assert node.next_job() == job
    node.tick()
    assert sent == [(0, Alive({2: "on host held chunk 0 for 700 s"}, 1.5))]
    del sent[:]
    while (chunk := node.next_chunk(1)) is not None:
        node.answered(1, computed(chunk, 1))
    node.answered(1, computed(again, 1))
    assert sent[-1][1].last and sorted(sent[-1][1].positions.tolist()) == list(range(12))


def test_jobs_are_passed_on_and_their_answers_go_back_to_whoever_sent_them():
    clock = Clock()
    node, sent = planner(clock)
    node.order(0, SqliteJob("set2.tar"))
    job = node.next_job()
    node.answered(4, SqliteWritten("set2.tar"))
    assert job == SqliteJob("set2.tar") and sent == [(0, SqliteWritten("set2.tar"))]
    node.order(0, Stop(5))
    assert node.finished and node.stopped.status == 5


def test_a_node_holding_work_says_it_is_alive_when_it_has_nothing_to_return():
    clock = Clock()
    node, sent = planner(clock)
    node.order(0, a_range(1, 4))
    node.next_chunk(1)
    clock.now += 14.9
    node.tick()
    assert sent == []
    clock.now += 0.2  # a quarter of the stall timeout
    node.tick()
    assert sent == [(0, Alive({}, 1.5))]


class Idle:
    """A planner with nothing to hand out that counts how often it is asked."""

    finished, asked = False, 0

    def next_chunk(self, capacity):
        self.asked += 1

    def next_job(self):
        return None

    def tick(self):
        pass


class Quiet:
    def poll(self):
        return None

    def progress(self):
        pass


@pytest.mark.parametrize("peers", [4, 4000])
def test_a_pass_with_nothing_to_do_asks_the_planner_once_whatever_the_number_of_peers(peers):
    planner = Idle()
    dispatcher = Dispatcher(Quiet(), planner, dict.fromkeys(range(1, peers + 1), 1))
    for _ in range(10):
        assert not dispatcher.step()
    assert planner.asked == 10


def many_tarballs(tmp_path):
    return tiny_tarballs(tmp_path / "in", 5, 57)


@pytest.mark.parametrize("size, node_size", [(4, None), (8, 2), (9, 3), (6, 1)],
                         ids=["flat-4", "8-as-4-nodes", "9-as-3-nodes", "6-nodes-of-1"])
def test_tiered_and_flat_jobs_give_the_outputs_of_one_rank(tmp_path, size, node_size):
    input_dir = many_tarballs(tmp_path)
    assert run_serial(simulated_config(tmp_path / "serial", input_dir)) == EXIT_OK
    config = simulated_config(tmp_path, input_dir, node_size=node_size)
    assert run_in_process(config, size) == EXIT_OK
    assert outputs(tmp_path / "out") == outputs(tmp_path / "serial" / "out")


def test_a_stuck_worker_of_a_node_is_given_up_on_by_its_node_coordinator(tmp_path, caplog):
    input_dir = many_tarballs(tmp_path)
    assert run_serial(simulated_config(tmp_path / "serial", input_dir)) == EXIT_OK
    config = simulated_config(tmp_path, input_dir, node_size=3, stall_timeout=0.3)
    with caplog.at_level(logging.ERROR, logger="mpicolor"):
        assert run_in_process(config, 9, stuck={5}) == EXIT_RANK_LOST
    assert outputs(tmp_path / "out") == outputs(tmp_path / "serial" / "out")
    lost = [record.message for record in caplog.records if record.message.startswith("rank 5 ")]
    assert lost and "without answering (--stall-timeout 0.3)" in lost[0] and "other ranks of its node" in lost[0]


def test_a_stuck_node_coordinator_s_ranges_go_to_other_nodes(tmp_path, caplog):
    input_dir = many_tarballs(tmp_path)
    assert run_serial(simulated_config(tmp_path / "serial", input_dir)) == EXIT_OK
    config = simulated_config(tmp_path, input_dir, node_size=3, stall_timeout=0.3)
    with caplog.at_level(logging.ERROR, logger="mpicolor"):
        assert run_in_process(config, 9, stuck={3}) == EXIT_RANK_LOST
    assert outputs(tmp_path / "out") == outputs(tmp_path / "serial" / "out")
    lost = next(record.message for record in caplog.records if record.message.startswith("rank 3 "))
    assert "(node coordinator of ranks 3-5) on in-process held " in lost
    assert "goes to other nodes (the ranks of its node, 4, 5, are lost with it)" in lost
