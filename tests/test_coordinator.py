"""The coordinator's decisions in process, without mpiexec: chunk sizes, the tail, indexing ahead, and what a
resume reuses (through ``run_serial``, the serial twin of the MPI dispatch)."""

import math

import numpy as np
import pytest

from helpers import Clock, make_partial, outputs, simulated_config, tiny_tarballs
from mpicolor.job.protocol import ChunkResult, IndexJob, RankStats
from mpicolor.job.worker import FrameComputer, index_for_coordinator
from mpicolor.job.coordinator import WRITE_BACKLOG, Coordinator, run_serial
from mpicolor.job.report import EXIT_RANK_LOST
from mpicolor.job.schedule import CHUNK_SECONDS, INDEXING_AHEAD, MAX_CHUNK, Schedule, WorkerLedger
from mpicolor.state.checkpoint import CHECKPOINT_FOLDER
from mpicolor.state.results import CPU


def started(config, size, delegate_indexing=False):
    coordinator = Coordinator(config, size, delegate_indexing=delegate_indexing, clock=Clock())
    coordinator.open_run()
    coordinator.start_clocks()
    return coordinator


def computed(chunk, seconds_per_frame, clusters=5):
    """The result of ``chunk`` as if each frame had cost ``seconds_per_frame``."""
    n_frames = len(chunk.positions)
    return ChunkResult(chunk.chunk_id, chunk.tarball, chunk.positions, np.zeros((n_frames, clusters), np.uint32),
                       np.zeros((n_frames, clusters), np.float32), np.full(n_frames, CPU, np.uint8),
                       stats={1: RankStats(n_frames, seconds_per_frame * n_frames, {"cpu": n_frames})})


def test_the_schedule_cuts_a_quarter_second_of_work_and_splits_the_tail():
    schedule = Schedule(size=4)
    assert schedule.work_length(1, 10_000, tail=False) == 1  # a frame's cost is not known yet
    schedule.observe(frames=10, seconds=0.01)
    assert schedule.frame_seconds == 0.001 and schedule.work_length(1, 10_000, tail=False) == 250
    assert schedule.work_length(1, 800, tail=True) == 100  # 800 frames over 2 x 4 ranks
    assert schedule.work_length(1, 3, tail=True) == 1
    schedule.observe(frames=10, seconds=0.02)
    assert schedule.frame_seconds == pytest.approx(0.8 * 0.001 + 0.2 * 0.002)
    schedule.frame_seconds = 1e-9
    assert schedule.work_length(1, 10**9, tail=False) == MAX_CHUNK
    assert schedule.frames_ahead() == 4 * 4 * int(CHUNK_SECONDS / 1e-6)
    assert Schedule(size=2).frames_ahead() == 8 and Schedule(size=64).indexing_at_once() == 64
    assert Schedule(size=2).indexing_at_once() == INDEXING_AHEAD


def test_chunks_take_a_quarter_second_of_work_up_to_the_cap(tmp_path):
    # workers index: the two tarballs not indexed yet keep the run out of its tail
    coordinator = started(simulated_config(tmp_path, tiny_tarballs(tmp_path / "in", 3, 9000)), size=2,
                          delegate_indexing=True)
    first = coordinator.next_chunk()
    assert len(first.positions) == 1  # a frame's cost is not known yet
    coordinator.accept(computed(first, 0.001))
    assert len(coordinator.next_chunk().positions) == int(CHUNK_SECONDS / 0.001)
    coordinator.accept(computed(coordinator.next_chunk(), 0.0005))
    assert len(coordinator.next_chunk().positions) == int(CHUNK_SECONDS / (0.8 * 0.001 + 0.2 * 0.0005))
    coordinator.schedule.frame_seconds = 1e-7  # a million frames a second would make chunks of 2.5 million
    assert len(coordinator.next_chunk().positions) == MAX_CHUNK


def test_the_tail_is_split_so_that_every_rank_finishes_together(tmp_path):
    size = 4
    coordinator = started(simulated_config(tmp_path, tiny_tarballs(tmp_path / "in", 1, 3000)), size=size)
    coordinator.accept(computed(coordinator.next_chunk(), 0.0001))  # 2500 frames a chunk, but one tarball only
    lengths = []
    while (chunk := coordinator.next_chunk()) is not None:
        expected = math.ceil(coordinator._unassigned() / (2 * size) + len(chunk.positions) / (2 * size))
        lengths.append(len(chunk.positions))
        assert len(chunk.positions) <= max(1, expected)
        coordinator.accept(computed(chunk, 0.0001))
    assert lengths[0] == math.ceil(2999 / (2 * size))
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] == 1
    assert coordinator.all_computed


def test_workers_index_ahead_only_as_far_as_the_work_needs(tmp_path):
    size = 2
    coordinator = started(simulated_config(tmp_path, tiny_tarballs(tmp_path / "in", 8, 50)), size=size,
                          delegate_indexing=True)
    jobs = [coordinator.next_job() for _ in range(INDEXING_AHEAD + 2)]
    assert [job.number for job in jobs if job] == list(range(INDEXING_AHEAD)) and jobs[-1] is None
    for job in jobs[:2]:
        coordinator.indexed(index_for_coordinator(job.number, job.path))
    # 100 frames to hand out, more than the 4 chunks per rank wanted: no more indexing for now
    assert coordinator._unassigned() == 100 and coordinator.next_job() is None
    coordinator.accept(computed(coordinator.next_chunk(), 0.00001))  # cheap frames: many more wanted
    assert isinstance(coordinator.next_job(), IndexJob)


def test_with_nothing_to_hand_out_rank_0_indexes_itself_rather_than_wait(tmp_path):
    coordinator = started(simulated_config(tmp_path, tiny_tarballs(tmp_path / "in", 6, 10)), size=2,
                          delegate_indexing=True)
    assert coordinator.next_chunk().tarball == 0


class CountingComputer(FrameComputer):
    """A FrameComputer that counts the frames it computes."""

    frames = 0

    def compute(self, chunk):
        self.frames += len(chunk.positions)
        return super().compute(chunk)


def rerun_serial(config):
    """Run ``config`` again in this process; returns how many frames it computed."""
    computer = CountingComputer(config)
    assert run_serial(config, computer) == 0
    return computer.frames


@pytest.mark.parametrize("clusters", [5, 2])
def test_a_resume_computes_only_the_frames_the_checkpoint_lacks(tmp_path, clusters):
    config = simulated_config(tmp_path, tiny_tarballs(tmp_path / "in", 3, 40), clusters=clusters)
    assert run_serial(config) == 0
    finished = outputs(tmp_path / "out")
    make_partial(tmp_path / "out", "set1.tar", list(range(0, 40, 3)))
    assert rerun_serial(config) == 14 and outputs(tmp_path / "out") == finished


def test_a_complete_tarball_whose_sqlite_file_was_lost_is_written_from_the_checkpoint(tmp_path):
    config = simulated_config(tmp_path, tiny_tarballs(tmp_path / "in", 2, 20))
    assert run_serial(config) == 0
    finished = outputs(tmp_path / "out")
    (tmp_path / "out" / "hist_set0.tar_db.sqlite").unlink()
    assert rerun_serial(config) == 0 and outputs(tmp_path / "out") == finished


def test_rank_0_holds_only_the_tarballs_in_flight(tmp_path):
    config = simulated_config(tmp_path, tiny_tarballs(tmp_path / "in", 12, 300))
    coordinator = started(config, size=1)
    held = []
    while not coordinator.all_computed:
        chunk = coordinator.next_chunk()
        # 25 frames a chunk, 100 wanted ahead: one tarball at a time is indexed and in flight
        coordinator.accept(computed(chunk, 0.01))
        coordinator.clock.now += 2  # past the gap after which ended tarballs are saved
        coordinator.tick()
        held.append(len(coordinator.active) + len(coordinator.dirty))
    # the tarball computing, the next one indexed ahead, and those that ended while the writer was busy
    assert max(held) <= 2 + WRITE_BACKLOG + 1
    coordinator.close_run()
    assert len(list((tmp_path / "out" / CHECKPOINT_FOLDER).iterdir())) == 12


def test_the_ledger_finds_a_silent_worker_and_hands_back_what_it_held():
    clock = Clock()
    ledger = WorkerLedger([1, 2], 2, clock)
    ledger.hand(1, ("chunk", 0), "chunk 0")
    ledger.hand(2, ("chunk", 1), "chunk 1")
    clock.now = 5
    ledger.hand(1, ("chunk", 2), "chunk 2")  # already busy: its silence still counts from 0
    assert ledger.returned(2, ("chunk", 1))
    clock.now = 10
    assert [(rank, silent, work) for rank, silent, work in ledger.stalled(6)] == [(1, 10, "chunk 0")]
    assert ledger.stalled(6) and not ledger.stalled(11)
    assert ledger.lose(1) == ["chunk 0", "chunk 2"]
    assert list(ledger.ranks()) == [2] and ledger.idle()
    assert not ledger.returned(1, ("chunk", 0))  # a late answer is dropped


def test_the_work_of_a_lost_rank_is_handed_out_again_and_the_run_still_ends(tmp_path):
    coordinator = started(simulated_config(tmp_path, tiny_tarballs(tmp_path / "in", 2, 20)), size=2,
                          delegate_indexing=True)
    indexed_by_rank_1, index_job = coordinator.next_job(), coordinator.next_job()  # rank 1 indexes both
    assert coordinator.next_chunk() is None  # nothing to hand out: rank 0 waits for the indexing it asked for
    coordinator.indexed(index_for_coordinator(indexed_by_rank_1.number, indexed_by_rank_1.path))
    first = coordinator.next_chunk()
    coordinator.rank_lost(1, "on host held chunk 0 for 5 s", [first, index_job])
    again = coordinator.next_chunk()
    assert again.positions.tolist() == first.positions.tolist() and again.chunk_id != first.chunk_id
    computer = FrameComputer(coordinator.config)
    coordinator.accept(computer.compute(again))
    indexed_again = []
    while not coordinator.all_computed:
        job = coordinator.next_job()
        if job is not None:
            indexed_again.append(job)
            coordinator.indexed(index_for_coordinator(job.number, job.path))
        chunk = coordinator.next_chunk()
        if chunk is not None:
            coordinator.accept(computer.compute(chunk))
    assert indexed_again == [index_job]
    assert coordinator.all_computed and coordinator.close_run() == EXIT_RANK_LOST
    assert sorted(outputs(tmp_path / "out")) == ["hist_set0.tar_db.sqlite", "hist_set1.tar_db.sqlite"]
