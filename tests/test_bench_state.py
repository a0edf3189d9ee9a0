"""mpicolor bench state: the synthetic collection is made of valid tiny frames, and the table and JSON hold
every number the targets are measured on."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from helpers import read_sqlite
from mpicolor.bench.state import linked_collection, tiny_frames, tiny_tarball
from mpicolor.engine.decode import check_head, decode_frame


def test_tiny_frames_are_distinct_and_pass_the_checks_of_a_real_frame():
    frames = list(tiny_frames(3))
    assert len(set(frames)) == 3
    for frame in frames:
        assert check_head(frame, len(frame)) and decode_frame(frame).shape == (1, 1, 3)


def test_a_collection_is_hard_links_to_one_tarball_made_once(tmp_path):
    source = tiny_tarball(str(tmp_path), 5)
    made = os.stat(source).st_mtime_ns
    assert tiny_tarball(str(tmp_path), 5) == source and os.stat(source).st_mtime_ns == made  # reused
    linked_collection(source, str(tmp_path / "in"), 3)
    paths = sorted((tmp_path / "in").iterdir())
    assert [path.name for path in paths] == ["set0000.tar", "set0001.tar", "set0002.tar"]
    assert {os.stat(path).st_ino for path in paths} == {os.stat(source).st_ino}
    with tarfile.open(paths[0]) as tar:
        assert [member.name for member in tar.getmembers()] == [f"frames/{i:07d}.jpg" for i in range(5)]


@pytest.mark.mpi
def test_two_small_collections_side_by_side(tmp_path):
    report = tmp_path / "state.json"
    finished = subprocess.run([sys.executable, "-m", "mpicolor", "bench", "state", "--tarballs", "2", "3",
                               "--members", "40", "--ranks", "2", "--out", str(tmp_path / "bench"), "--json",
                               str(report)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "3 against 2 tarballs (target;" in finished.stdout and "rank 0 peak memory" in finished.stdout
    rows = json.loads(report.read_text())["rows"]
    assert [row["frames"] for row in rows] == [80, 120, 80]  # the smaller collection before and after
    assert all(row["written_vs_output"] > 0.5 and row["rank0_peak_bytes"] > 0 for row in rows)
    tables = read_sqlite(tmp_path / "bench" / "out-3" / "hist_set0002.tar_db.sqlite")
    assert len(tables["images"]) == 40 and tables["failures"] == []


def test_bench_coordinator_runs_rank_0s_code_to_the_end_against_simulated_nodes(tmp_path):
    from mpicolor.bench.coordinator import FRAMES_PER_SET, simulate

    frames = 4 * FRAMES_PER_SET
    row = simulate(nodes=3, ranks_per_node=32, cost=0.006, frames=frames, window=600, folder=str(tmp_path),
                   per_frame=2e-7)
    assert row["finished"] and row["frames_done"] == frames and row["data_sets"] == 4
    # every frame computed once: the work cannot beat ideal, and three nodes keep busy
    assert row["ideal_s"] <= row["work_s"] < 2 * row["ideal_s"]
    assert 0 < row["rank0_cpu_s"] and row["messages_per_s"] > 0 and row["tail_s"] >= 0
    summary = json.loads((tmp_path / "out-3-4" / "run-summary.json").read_text())
    assert summary["frames"] == frames
