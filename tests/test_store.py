"""The outputs of rank 0: sqlite per tarball and the HDF5 checkpoint, atomic and resumable."""

import os
import sqlite3

import numpy as np
import pytest

from mpicolor import store

# in the portable subset, which run/power-check.sh runs on ppc64le under emulation
pytestmark = pytest.mark.portable

SETTINGS = {"clusters": 2, "method": "fast", "seed": 0, "scale": 2, "max_pixels": 10, "simulate": None,
            "label": "db", "version": "0"}


def results(name="a.tar", frames=("x.jpg", "director's_cut_0001.jpg", "x.jpg")):
    tarball = store.TarballResults.empty(name, frames, 2, skipped={"symlink": 1})
    tarball.record(np.arange(len(frames)), np.arange(2 * len(frames), dtype=np.uint32).reshape(-1, 2),
                   np.full((len(frames), 2), 0.5, np.float32), np.full(len(frames), store.CPU, np.uint8), {})
    return tarball


def test_sqlite_schema_names_and_parameterised_rows(tmp_path):
    tarball = results()
    tarball.record(np.array([2]), np.zeros((1, 2), np.uint32), np.zeros((1, 2), np.float32),
                   np.array([store.FAILED], np.uint8), {2: "not an image"})
    assert tarball.settle()
    path = store.write_sqlite(str(tmp_path), "db", tarball, SETTINGS)
    assert os.path.basename(path) == "hist_a.tar_db.sqlite"
    connection = sqlite3.connect(path)
    columns = [row[1] for row in connection.execute("PRAGMA table_info(images)")]
    assert columns == ["imgname", "color0", "color1", "share0", "share1", "member"]
    assert connection.execute("SELECT imgname, color0, color1, member FROM images").fetchall() == [
        ("x.jpg", 0, 1, 0), ("director's_cut_0001.jpg", 2, 3, 1)]
    assert connection.execute("SELECT * FROM failures").fetchall() == [("x.jpg", "not an image", 2)]
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert sorted(os.listdir(tmp_path)) == ["hist_a.tar_db.sqlite"]  # no temporary left


def test_checkpoint_round_trip_and_generations(tmp_path):
    checkpoint = store.Checkpoint(str(tmp_path))
    assert checkpoint.load() == (None, {})
    first = results("a.tar")
    checkpoint.save(SETTINGS, [first])
    second = results("b.tar", ["only\nname;'--"])
    second.settle()
    checkpoint.save(SETTINGS, [second])
    settings, tarballs = checkpoint.load()
    assert settings == SETTINGS
    assert sorted(tarballs) == ["a.tar", "b.tar"]
    assert tarballs["b.tar"].frames == ["only\nname;'--"] and tarballs["b.tar"].status == store.COMPLETE
    np.testing.assert_array_equal(tarballs["a.tar"].packed, first.packed)
    assert tarballs["a.tar"].skipped == {"symlink": 1}
    assert os.path.exists(tmp_path / store.CHECKPOINT_PREV)


def test_corrupt_live_checkpoint_falls_back_to_previous(tmp_path):
    checkpoint = store.Checkpoint(str(tmp_path))
    checkpoint.save(SETTINGS, [results("a.tar")])
    checkpoint.save(SETTINGS, [results("b.tar")])
    with open(tmp_path / store.CHECKPOINT, "r+b") as live:
        live.write(b"garbage!" * 64)
    settings, tarballs = checkpoint.load()
    assert sorted(tarballs) == ["a.tar"]  # the previous generation


def test_second_lock_is_refused_and_released_lock_is_reusable(tmp_path):
    first = store.OutputLock(str(tmp_path))
    first.acquire()
    with pytest.raises(store.OutputError, match="in use by another mpicolor run"):
        store.OutputLock(str(tmp_path)).acquire()
    first.release()
    second = store.OutputLock(str(tmp_path))
    second.acquire()
    second.release()


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".hist_a.tar_db.sqlite.partial").write_bytes(b"half")
    (tmp_path / "keep.txt").write_bytes(b"user")
    store.remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_save_after_a_kill_between_the_renames_keeps_every_tarball(tmp_path):
    checkpoint = store.Checkpoint(str(tmp_path))
    checkpoint.save(SETTINGS, [results("a.tar")])
    checkpoint.save(SETTINGS, [results("b.tar")])
    # the job died after moving the live generation aside and before renaming the new one in
    os.replace(tmp_path / store.CHECKPOINT, tmp_path / store.CHECKPOINT_PREV)
    checkpoint.save(SETTINGS, [results("c.tar")])
    assert sorted(checkpoint.load()[1]) == ["a.tar", "b.tar", "c.tar"]
