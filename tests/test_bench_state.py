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
