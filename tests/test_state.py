"""The state of a run on disk: sqlite per tarball, the HDF5 checkpoint, the lock; atomic and resumable."""

import os
import shutil
import sqlite3

import h5py
import numpy as np
import pytest

from helpers import TESTS
from mpicolor.state import checkpoint as checkpoint_module
from mpicolor.state import resume
from mpicolor.state.atomic import TEMP_SUFFIX, publish, remove_stale_temporaries, temporary_path
from mpicolor.state.checkpoint import (CHECKPOINT, CHECKPOINT_FOLDER, CHECKPOINT_PREV_0_1, FORMAT, Checkpoint,
                                       CheckpointReader, DamagedCheckpoint, _write_tarball, tarball_file_name)
from mpicolor.state.output_dir import OutputError, OutputLock
from mpicolor.state.results import COMPLETE, CPU, FAILED, PARTIAL, PENDING, TarballResults
from mpicolor.state.sqlite import write_sqlite
from mpicolor.state.tarballs import Fingerprint

# in the portable subset, which run/power-check.sh runs on ppc64le under emulation
pytestmark = pytest.mark.portable

SETTINGS = {"clusters": 2, "method": "fast", "seed": 0, "scale": 2, "max_pixels": 10, "simulate": None,
            "label": "db", "version": "0"}
CHECKPOINT_0_1 = os.path.join(TESTS, "data", "checkpoint-0.1.0.h5")


def results(name="a.tar", frames=("x.jpg", "director's_cut_0001.jpg", "x.jpg"), first_colour=0):
    tarball = TarballResults.empty(name, frames, 2, skipped={"symlink": 1},
                                   fingerprint=Fingerprint(1024, 5, "ab" * 32))
    colours = np.arange(first_colour, first_colour + 2 * len(frames), dtype=np.uint32).reshape(-1, 2)
    tarball.record(np.arange(len(frames)), colours, np.full((len(frames), 2), 0.5, np.float32),
                   np.full(len(frames), CPU, np.uint8), {})
    return tarball


def opened(folder):
    checkpoint = Checkpoint(str(folder))
    checkpoint.open()
    return checkpoint


def test_sqlite_schema_names_and_parameterised_rows(tmp_path):
    tarball = results()
    tarball.record(np.array([2]), np.zeros((1, 2), np.uint32), np.zeros((1, 2), np.float32),
                   np.array([FAILED], np.uint8), {2: "not an image"})
    assert tarball.settle()
    path = write_sqlite(str(tmp_path), "db", tarball, SETTINGS)
    assert os.path.basename(path) == "hist_a.tar_db.sqlite"
    connection = sqlite3.connect(path)
    columns = [row[1] for row in connection.execute("PRAGMA table_info(images)")]
    assert columns == ["imgname", "color0", "color1", "share0", "share1", "member"]
    assert connection.execute("SELECT imgname, color0, color1, member FROM images").fetchall() == [
        ("x.jpg", 0, 1, 0), ("director's_cut_0001.jpg", 2, 3, 1)]
    assert connection.execute("SELECT * FROM failures").fetchall() == [("x.jpg", "not an image", 2)]
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert sorted(os.listdir(tmp_path)) == ["hist_a.tar_db.sqlite"]  # no temporary left


def test_checkpoint_round_trip_through_one_entry_point(tmp_path):
    checkpoint = Checkpoint(str(tmp_path))
    assert checkpoint.open() is None
    first = results("a.tar")
    checkpoint.save(SETTINGS, [first], "/data/in")
    second = results("b.tar", ["only\nname;'--"])
    second.settle()
    checkpoint.save(SETTINGS, [second])
    again = Checkpoint(str(tmp_path))
    assert again.open() == SETTINGS
    assert sorted(again.files) == ["a.tar", "b.tar"]
    assert again.read("b.tar").frames == ["only\nname;'--"] and again.read("b.tar").status == COMPLETE
    stored = again.read("a.tar")
    np.testing.assert_array_equal(stored.packed, first.packed)
    assert stored.skipped == {"symlink": 1} and stored.fingerprint == first.fingerprint
    # the design card's single HDF5 entry point: every tarball through checkpoint.h5's external links
    with h5py.File(tmp_path / CHECKPOINT, "r") as h5:
        assert h5.attrs["format"] == FORMAT and h5.attrs["clusters"] == 2
        np.testing.assert_array_equal(h5["tarballs/a.tar/packed"][...], first.packed)
        assert h5["tarballs/b.tar"].attrs["status"] == COMPLETE
    with CheckpointReader(str(tmp_path)) as reader:
        assert reader.settings == SETTINGS and reader.names() == ["a.tar", "b.tar"]


def test_files_of_one_checkpoint_may_come_from_two_engines_and_say_which(tmp_path):
    checkpoint = opened(tmp_path)
    checkpoint.save(dict(SETTINGS, engine=1), [results("a.tar")])
    checkpoint.save(dict(SETTINGS, engine=2), [results("b.tar")])
    again = opened(tmp_path)
    assert (again.read("a.tar").engine, again.read("b.tar").engine) == (1, 2)



@pytest.mark.parametrize("limit", [64 << 20, 1000], ids=["fixed-length", "variable-length"])
def test_names_read_as_bytes_are_whole_however_long(tmp_path, monkeypatch, limit):
    # names are stored fixed-length, or variable-length (as format 2 stored every name) when a few long ones
    # would make one array of them too large; both read whole, as str and on the tools' fast path as bytes
    monkeypatch.setattr(checkpoint_module, "NAMES_ARRAY_BYTES", limit)
    names = ["a.jpg", "\u00e9t\u00e9/" + "x" * 300 + ".jpg", "y" * 64, ""]
    opened(tmp_path).save(SETTINGS, [results("a.tar", names)])
    with h5py.File(tmp_path / CHECKPOINT_FOLDER / "a.tar.h5", "r+") as h5:
        assert (h5py.check_string_dtype(h5["frames"].dtype).length is None) == (limit == 1000)
        if limit == 1000:
            h5.attrs["format"] = "mpicolor-checkpoint-2"  # as the last version wrote every file
    assert opened(tmp_path).read("a.tar").frames == names
    stored = opened(tmp_path).read("a.tar", names_as_bytes=True)
    assert stored.frames.tolist() == [name.encode() for name in names]


def test_a_save_writes_what_changed_and_nothing_else(tmp_path):
    checkpoint = opened(tmp_path)
    checkpoint.save(SETTINGS, [results("a.tar")])
    a_file = os.stat(tmp_path / CHECKPOINT_FOLDER / "a.tar.h5")
    checkpoint.save(SETTINGS, [results("b.tar")])
    index = os.stat(tmp_path / CHECKPOINT)
    checkpoint.save(SETTINGS, [results("b.tar", first_colour=7)])
    assert os.stat(tmp_path / CHECKPOINT_FOLDER / "a.tar.h5").st_ino == a_file.st_ino  # written once
    assert os.stat(tmp_path / CHECKPOINT).st_ino == index.st_ino  # no new tarball: the index is not rewritten
    assert opened(tmp_path).read("b.tar").packed[0, 0] == 7


def test_a_tarball_saved_again_with_other_names_keeps_names_and_colours_together(tmp_path):
    checkpoint = opened(tmp_path)
    checkpoint.save(SETTINGS, [results("a.tar", ["x.jpg", "y.jpg"])])
    checkpoint.save(SETTINGS, [results("a.tar", ["p.jpg", "q.jpg"], first_colour=100)])
    stored = opened(tmp_path).read("a.tar")
    assert stored.frames == ["p.jpg", "q.jpg"] and stored.packed.tolist() == [[100, 101], [102, 103]]


def test_saving_a_tarball_again_and_again_does_not_grow_its_file(tmp_path):
    checkpoint = opened(tmp_path)
    tarball = results("a.tar", [f"{n}.jpg" for n in range(200)])
    for position in range(60):
        tarball.failures[position] = f"reason {position} " * 4
        checkpoint.save(SETTINGS, [tarball])
    grown = os.path.getsize(tmp_path / CHECKPOINT_FOLDER / "a.tar.h5")
    (tmp_path / "fresh").mkdir()
    opened(tmp_path / "fresh").save(SETTINGS, [tarball])
    assert grown == os.path.getsize(tmp_path / "fresh" / CHECKPOINT_FOLDER / "a.tar.h5")


def test_a_damaged_index_is_rebuilt_from_the_tarball_files(tmp_path):
    checkpoint = opened(tmp_path)
    checkpoint.save(SETTINGS, [results("a.tar")])
    checkpoint.save(SETTINGS, [results("b.tar")])
    with open(tmp_path / CHECKPOINT, "r+b") as index:
        index.write(b"garbage!" * 64)
    assert opened(tmp_path).settings == SETTINGS
    with h5py.File(tmp_path / CHECKPOINT, "r") as h5:  # rewritten by open()
        assert sorted(h5["tarballs"]) == ["a.tar", "b.tar"]
    os.remove(tmp_path / CHECKPOINT)
    assert sorted(opened(tmp_path).files) == ["a.tar", "b.tar"]


def test_a_tarball_file_published_before_the_index_is_found(tmp_path):
    checkpoint = opened(tmp_path)
    checkpoint.save(SETTINGS, [results("a.tar")])
    # killed after publishing b.tar's file and before rewriting the index
    final = str(tmp_path / CHECKPOINT_FOLDER / "b.tar.h5")
    _write_tarball(temporary_path(final), results("b.tar"), '{"clusters": 2}')
    publish(temporary_path(final), final)
    opened(tmp_path)
    with h5py.File(tmp_path / CHECKPOINT, "r") as h5:
        assert sorted(h5["tarballs"]) == ["a.tar", "b.tar"]


def test_a_damaged_tarball_file_costs_that_tarball_only(tmp_path):
    checkpoint = opened(tmp_path)
    checkpoint.save(SETTINGS, [results("a.tar"), results("b.tar")])
    with open(tmp_path / CHECKPOINT_FOLDER / "b.tar.h5", "r+b") as damaged:
        damaged.write(b"garbage!" * 64)
    again = opened(tmp_path)
    assert again.read("a.tar").frames == results().frames
    with pytest.raises(DamagedCheckpoint, match="b.tar.h5"):
        again.read("b.tar")


def test_a_tarball_file_of_other_settings_is_not_used(tmp_path):
    opened(tmp_path).save(SETTINGS, [results("a.tar")])
    (tmp_path / "other").mkdir()
    opened(tmp_path / "other").save(dict(SETTINGS, clusters=3), [results("a.tar")])
    shutil.copy(tmp_path / "other" / CHECKPOINT_FOLDER / "a.tar.h5", tmp_path / CHECKPOINT_FOLDER / "a.tar.h5")
    with pytest.raises(DamagedCheckpoint, match="other settings.*clusters"):
        opened(tmp_path).read("a.tar")


def test_a_name_too_long_for_a_file_name_is_stored_under_its_digest(tmp_path):
    name = "n" * 250 + ".tar"
    assert tarball_file_name(name).endswith(".long.h5") and tarball_file_name("a.tar") == "a.tar.h5"
    opened(tmp_path).save(SETTINGS, [results(name)])
    assert opened(tmp_path).read(name).name == name


def test_a_0_1_0_checkpoint_is_converted_and_its_previous_generation_dropped(tmp_path):
    shutil.copy(CHECKPOINT_0_1, tmp_path / CHECKPOINT)
    shutil.copy(CHECKPOINT_0_1, tmp_path / CHECKPOINT_PREV_0_1)
    with CheckpointReader(str(tmp_path)) as reader:  # the tools read it in place
        assert reader.names() == ["bottle.tar", "car.tar", "gone.tar"]
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT, CHECKPOINT_PREV_0_1]
    checkpoint = opened(tmp_path)
    assert checkpoint.settings["version"] == "0.1.0" and sorted(checkpoint.files) == ["bottle.tar", "car.tar",
                                                                                     "gone.tar"]
    assert sorted(os.listdir(tmp_path)) == sorted([CHECKPOINT, CHECKPOINT_FOLDER])
    gone = checkpoint.read("gone.tar")
    assert gone.failures == {1: "truncated JPEG: injected for the fixture"}
    assert gone.notes == {0: "fewer distinct colours than clusters"} and gone.skipped == {"symlink": 2}
    car = checkpoint.read("car.tar")
    assert car.status == PARTIAL and car.fingerprint is None and car.pending().tolist() == [1, 3]


def test_a_0_1_0_checkpoint_killed_between_its_renames_is_converted_from_its_previous_generation(tmp_path):
    shutil.copy(CHECKPOINT_0_1, tmp_path / CHECKPOINT_PREV_0_1)
    assert sorted(opened(tmp_path).files) == ["bottle.tar", "car.tar", "gone.tar"]


def test_second_lock_is_refused_and_released_lock_is_reusable(tmp_path):
    first = OutputLock(str(tmp_path))
    first.acquire()
    with pytest.raises(OutputError, match="in use by another mpicolor run"):
        OutputLock(str(tmp_path)).acquire()
    first.release()
    second = OutputLock(str(tmp_path))
    second.acquire()
    second.release()


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".hist_a.tar_db.sqlite.partial").write_bytes(b"half")
    (tmp_path / "keep.txt").write_bytes(b"user")
    remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]
    opened(tmp_path).save(SETTINGS, [results("a.tar")])
    (tmp_path / CHECKPOINT_FOLDER / (".b.tar.h5" + TEMP_SUFFIX)).write_bytes(b"half")
    opened(tmp_path)
    assert os.listdir(tmp_path / CHECKPOINT_FOLDER) == ["a.tar.h5"]


class Index:
    """The parts of an :class:`~mpicolor.job.worker.IndexedTarball` that a resume looks at."""

    def __init__(self, names, fingerprint):
        self.names, self.fingerprint, self.skipped, self.incomplete = names, fingerprint, {}, None


@pytest.mark.parametrize("now, reused, words", [
    (Fingerprint(1024, 5, "ab" * 32), True, None),
    (Fingerprint(2048, 5, "ab" * 32), False, "size 1024 bytes, now 2048"),
    (Fingerprint(1024, 5, "cd" * 32), False, "another member table"),
    (Fingerprint(1024, 6, "ab" * 32), False, "another modification time"),
], ids=["same", "size", "members", "mtime"])
def test_stored_results_are_reused_only_for_the_same_tarball(caplog, now, reused, words):
    stored = results("a.tar")
    stored.backend[1] = PENDING
    found = resume.reusable(stored, Index(stored.frames, now), clusters=2, engine=1)
    assert (found is stored) == reused
    if words:
        assert f"a.tar changed since its results were computed ({words}" in caplog.text


def test_a_0_1_0_tarball_is_reused_when_its_member_names_match_and_takes_the_fingerprint():
    stored = results("a.tar")
    stored.fingerprint = None
    now = Fingerprint(1, 2, "ef" * 32)
    assert resume.reusable(stored, Index(list(stored.frames), now), 2, 1).fingerprint == now
    stored.fingerprint = None
    assert resume.reusable(stored, Index(["other.jpg"] * 3, now), 2, 1) is None


def test_results_of_another_engine_are_computed_again_and_0_1_0_ones_are_version_1(caplog):
    # a new version of the fast method must not finish a tarball that an older one began
    stored = results("a.tar")
    stored.backend[1] = PENDING
    index = Index(list(stored.frames), stored.fingerprint)
    assert resume.reusable(stored, index, 2, engine=2) is None
    assert "a.tar: its stored results come from version 1 of the method, this run's is version 2" in caplog.text
    stored.engine = 2
    assert resume.reusable(stored, index, 2, engine=2) is stored
    assert resume.settings_conflict(dict(SETTINGS, engine=1), dict(SETTINGS, engine=2)) is None


def test_settings_conflict_names_what_was_stored_and_what_is_asked():
    assert resume.settings_conflict(SETTINGS, dict(SETTINGS, version="9")) is None
    assert resume.settings_conflict(SETTINGS, dict(SETTINGS, clusters=5)) == (
        "results made with clusters=2; this run asks for clusters=5")


def test_saves_between_intervals_leave_the_index_to_a_later_save(tmp_path):
    def linked():
        with h5py.File(tmp_path / CHECKPOINT, "r") as h5:
            return sorted(h5["tarballs"])

    checkpoint = opened(tmp_path)
    checkpoint.save(SETTINGS, [results("a.tar")], index=False)
    assert linked() == ["a.tar"]  # no index yet: written anyway
    checkpoint.save(SETTINGS, [results("b.tar")], index=False)
    assert linked() == ["a.tar"]
    assert sorted(opened(tmp_path).files) == ["a.tar", "b.tar"] and linked() == ["a.tar", "b.tar"]
    checkpoint.save(SETTINGS, [results("c.tar")])
    assert linked() == ["a.tar", "b.tar", "c.tar"]
