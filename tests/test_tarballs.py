"""Tests of mpicolor.tarballs: finding data sets, indexing members by offset, reading frames."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bz2
import hashlib
import lzma
import pickle
import sqlite3
import tarfile
import time

import h5py
import pytest

from hostile import (
    Entry,
    good_jpeg,
    hostile_member_tar,
    write_empty_tar,
    write_gzipped_tar,
    write_not_a_tar,
    write_tar,
    write_truncated_tar,
)
from mpicolor.tarballs import (
    IMAGE_SUFFIXES,
    BadTarball,
    Member,
    TarballIndex,
    find_tarballs,
    index_tarball,
    read_member,
)

FRAMES_DIR = os.path.join(os.path.dirname(__file__), "data", "frames")


def read_all(path, index):
    """Read every member of `index` from `path` by offset."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [read_member(fd, member) for member in index.members]
    finally:
        os.close(fd)


def tree(directory):
    """Every path under `directory`, with each file's size and SHA-256."""
    listing = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            listing[os.path.join(root, name)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                listing[path] = "special"
                continue
            with open(path, "rb") as file:
                listing[path] = hashlib.sha256(file.read()).hexdigest()
    return listing


@pytest.fixture
def real_frames_tar(tmp_path):
    """A tarball of the real test frames in per-clip subfolders, with a directory entry and a readme."""
    frames = []
    for file_name in sorted(os.listdir(FRAMES_DIR)):
        with open(os.path.join(FRAMES_DIR, file_name), "rb") as file:
            clip = file_name.split("_")[0]
            frames.append((f"{clip}/frames/{file_name}", file.read()))
    path = tmp_path / "set01.tar"
    write_tar(path, [Entry("bottle", kind="dir"), *frames, Entry("README.md", b"# notes\n")])
    return str(path), frames


def test_good_tar_offsets_give_exact_member_bytes(real_frames_tar):
    path, frames = real_frames_tar
    index = index_tarball(path)
    assert isinstance(index, TarballIndex)
    assert index.path == os.path.abspath(path)
    assert index.name == "set01.tar"
    assert [member.name for member in index.members] == [name for name, _ in frames]
    assert read_all(path, index) == [data for _, data in frames]
    assert index.skipped == {"directory": 1, "not an image": 1}
    assert index.incomplete is None
    assert len(frames) == 12


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_hostile_members_are_classified_and_names_kept(tmp_path, tar_format):
    path = str(tmp_path / "hostile.tar")
    expected = hostile_member_tar(path, tar_format)
    index = index_tarball(path)
    assert [member.name for member in index.members] == [frame["name"] for frame in expected["frames"]]
    assert read_all(path, index) == [frame["data"] for frame in expected["frames"]]
    assert index.skipped == expected["skipped_counts"]
    assert index.incomplete is None


def test_names_are_storable_in_sqlite_and_hdf5(tmp_path):
    path = str(tmp_path / "hostile.tar")
    hostile_member_tar(path)
    names = [member.name for member in index_tarball(path).members]
    assert "bad-\\xff\\xfe.jpg" in names and "nul-é\\x00x.jpg" in names
    for name in names:
        name.encode("utf-8")  # strict: no lone surrogates left
    database = sqlite3.connect(":memory:")
    database.execute("CREATE TABLE images (ordinal INTEGER PRIMARY KEY, name TEXT)")
    database.executemany("INSERT INTO images VALUES (?, ?)", enumerate(names))
    assert [name for (name,) in database.execute("SELECT name FROM images ORDER BY ordinal")] == names
    with h5py.File(tmp_path / "names.h5", "w") as store:
        store["names"] = names
        assert [name.decode("utf-8") for name in store["names"][()]] == names


def test_duplicate_names_are_both_kept_in_tar_order(tmp_path):
    path = str(tmp_path / "dup.tar")
    first, second = good_jpeg(1), good_jpeg(2)
    write_tar(path, [("a.jpg", good_jpeg(0)), ("dup.jpg", first), ("dup.jpg", second)])
    index = index_tarball(path)
    assert [member.name for member in index.members] == ["a.jpg", "dup.jpg", "dup.jpg"]
    assert read_all(path, index)[1:] == [first, second]


def test_truncated_tar_keeps_frames_before_the_cut(tmp_path):
    path = str(tmp_path / "cut.tar")
    expected = write_truncated_tar(path)
    index = index_tarball(path)
    assert [(member.name, data) for member, data in zip(index.members, read_all(path, index))] == expected["kept"]
    assert index.incomplete.startswith(f"truncated: archive ends at byte {expected['size']} inside member")
    assert repr(expected["cut"]) in index.incomplete


def _three_frame_tar(path, tar_format=tarfile.PAX_FORMAT, third_name="c.jpg"):
    """Write three frames; return the header offset of the third member."""
    write_tar(path, [("a.jpg", good_jpeg(0)), ("b.jpg", good_jpeg(1)), (third_name, good_jpeg(2))], tar_format)
    with tarfile.open(path) as archive:
        return archive.getmembers()[2].offset


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("cut before header", "with no end-of-archive marker"),
        ("cut inside header", "inside the header after member 'b.jpg'"),
        ("garbage header", "is not a valid tar header"),
        ("cut after long name", "truncated or corrupt: cannot read the member after 'b.jpg'"),
    ],
)
def test_damage_after_two_members_keeps_them(tmp_path, damage, reason):
    path = str(tmp_path / "damaged.tar")
    if damage == "cut after long name":
        # a GNU long-name record whose real header is missing
        header = _three_frame_tar(path, tarfile.GNU_FORMAT, "x" * 200 + ".jpg")
        cut = header + 2 * tarfile.BLOCKSIZE  # the long-name header and its one data block
    else:
        header = _three_frame_tar(path)
        cut = {"cut before header": header, "cut inside header": header + 100}.get(damage)
    with open(path, "r+b") as file:
        if cut is None:
            file.seek(header)
            file.write(b"garbage!" * 64)
        else:
            file.truncate(cut)
    index = index_tarball(path)
    assert [member.name for member in index.members] == ["a.jpg", "b.jpg"]
    assert read_all(path, index) == [good_jpeg(0), good_jpeg(1)]
    assert reason in index.incomplete


def test_first_member_cut_gives_no_frames_but_no_error(tmp_path):
    path = str(tmp_path / "cut.tar")
    write_tar(path, [("a.jpg", good_jpeg(0))])
    with open(path, "r+b") as file:
        file.truncate(tarfile.BLOCKSIZE + 10)
    index = index_tarball(path)
    assert index.members == []
    assert "inside member 'a.jpg'" in index.incomplete


def test_empty_tar_has_no_members_and_is_complete(tmp_path):
    path = str(tmp_path / "empty.tar")
    write_empty_tar(path)
    assert index_tarball(path) == TarballIndex(str(path), "empty.tar", [], {}, None)


def _bad_tarball_reason(path):
    with pytest.raises(BadTarball) as caught:
        index_tarball(str(path))
    assert caught.value.path == str(path)
    assert str(caught.value) == f"{path}: {caught.value.reason}"
    return caught.value.reason


def test_not_a_tar_is_rejected(tmp_path):
    path = tmp_path / "x.tar"
    write_not_a_tar(path)
    assert _bad_tarball_reason(path).startswith("not a tar archive")


def test_zero_byte_file_is_rejected(tmp_path):
    path = tmp_path / "zero.tar"
    path.write_bytes(b"")
    assert _bad_tarball_reason(path).startswith("empty file (0 bytes)")


@pytest.mark.parametrize("file_name", ["set.tar.gz", "disguised.tar"])
def test_gzip_is_rejected_by_magic_whatever_the_name(tmp_path, file_name):
    path = tmp_path / file_name
    write_gzipped_tar(path)
    reason = _bad_tarball_reason(path)
    assert reason.startswith("gzip-compressed: compressed tarballs are not supported")
    assert reason.endswith("e.g. gunzip")


@pytest.mark.parametrize(
    "compress, fmt",
    [(bz2.compress, "bzip2"), (lzma.compress, "xz"), (lambda data: b"\x28\xb5\x2f\xfd" + data, "zstd")],
)
def test_other_compressions_are_rejected_by_magic(tmp_path, compress, fmt):
    plain, path = tmp_path / "plain.tar", tmp_path / "packed.tar"
    write_empty_tar(plain)
    path.write_bytes(compress(plain.read_bytes()))
    assert _bad_tarball_reason(path).startswith(f"{fmt}-compressed")


def test_directory_missing_file_and_fifo_are_rejected(tmp_path):
    # Tests run as root in CI, where chmod 000 does not stop reads; a directory and a missing
    # file take the same "cannot read it as a file" paths, and a FIFO must not hang the open.
    directory = tmp_path / "dir.tar"
    directory.mkdir()
    assert _bad_tarball_reason(directory) == "is a directory, expected a tar file"
    assert "No such file or directory" in _bad_tarball_reason(tmp_path / "missing.tar")
    fifo = tmp_path / "pipe.tar"
    os.mkfifo(fifo)
    assert _bad_tarball_reason(fifo) == "is not a regular file, expected a tar file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_rejected(tmp_path):
    path = tmp_path / "locked.tar"
    write_empty_tar(path)
    path.chmod(0)
    assert _bad_tarball_reason(path) == "cannot open for reading: Permission denied"


def test_indexing_and_reading_create_no_file_and_change_no_byte(tmp_path, monkeypatch):
    path = str(tmp_path / "hostile.tar")
    hostile_member_tar(path)
    write_truncated_tar(tmp_path / "cut.tar")
    # relative paths would land in the working directory: make that one watched too
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    for tarball in ("hostile.tar", "cut.tar"):
        read_all(tarball, index_tarball(tarball))
    assert tree(tmp_path) == before


def test_read_member_names_the_member_when_the_file_shrank(tmp_path):
    path = str(tmp_path / "shrinks.tar")
    write_tar(path, [("a.jpg", good_jpeg(0)), ("b.jpg", good_jpeg(1))])
    last = index_tarball(path).members[-1]
    with open(path, "r+b") as file:
        file.truncate(last.offset + 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BadTarball, match=r"member 'b.jpg' is cut short: got 10 of \d+ bytes") as caught:
            read_member(fd, last)
    finally:
        os.close(fd)
    assert caught.value.path == path


def test_errors_and_members_survive_pickling():
    error = BadTarball("/data/x.tar", "not a tar archive")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))
    member = Member("a.jpg", 512, 100)
    assert pickle.loads(pickle.dumps(member)) == member


def test_image_suffixes_are_lower_case_with_dot():
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in IMAGE_SUFFIXES)
    assert {".jpg", ".jpeg", ".png", ".webp"} <= set(IMAGE_SUFFIXES)


def test_indexing_speed(tmp_path):
    n_members = 10_000
    path = str(tmp_path / "many.tar")
    frame = good_jpeg(0, 16, 16)
    write_tar(path, [(f"clip/frame_{i:05d}.jpg", frame) for i in range(n_members)])
    start = time.perf_counter()
    index = index_tarball(path)
    elapsed = time.perf_counter() - start
    assert len(index.members) == n_members
    rate = n_members / elapsed
    print(f"indexed {n_members} members in {elapsed:.3f} s: {rate:,.0f} members/s")
    # the target is 10,000/s; the bound leaves room for slow CI disks
    assert rate > 5_000, f"indexing ran at {rate:,.0f} members/s, expected > 5,000"


def test_find_tarballs_sorts_ignores_and_rejects(tmp_path):
    for name in ("b.tar", "A.TAR", "a.tar", "c.Tar", "notes.txt", "frames.tar.d", "set.tar.gz", "set.TGZ", "x.tar.xz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "subdir").mkdir()
    (tmp_path / "subdir" / "inner.tar").write_bytes(b"")
    (tmp_path / "dir.tar").mkdir()
    os.symlink(tmp_path / "a.tar", tmp_path / "link.tar")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.tar")
    tarballs, rejected = find_tarballs(str(tmp_path))
    assert tarballs == [str(tmp_path / name) for name in ("A.TAR", "a.tar", "b.tar", "c.Tar", "link.tar")]
    reasons = {os.path.basename(path): reason for path, reason in rejected}
    assert list(reasons) == ["dangling.tar", "dir.tar", "set.TGZ", "set.tar.gz", "x.tar.xz"]
    assert reasons["dangling.tar"] == "named *.tar but is a broken symbolic link"
    assert reasons["dir.tar"] == "named *.tar but is a directory, not a tar file"
    assert reasons["set.tar.gz"] == (
        "gzip-compressed: compressed tarballs are not supported: frames are read by byte offset; "
        "decompress it first, e.g. gunzip"
    )
    assert reasons["x.tar.xz"].endswith("e.g. unxz")


def test_find_tarballs_returns_absolute_paths(tmp_path, monkeypatch):
    (tmp_path / "a.tar").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert find_tarballs(".") == ([str(tmp_path / "a.tar")], [])


def test_find_tarballs_input_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="input directory does not exist") as missing:
        find_tarballs(str(tmp_path / "missing"))
    assert missing.value.filename == str(tmp_path / "missing")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="input path is not a directory") as not_dir:
        find_tarballs(str(tmp_path / "file"))
    assert not_dir.value.filename == str(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert find_tarballs(str(tmp_path / "empty")) == ([], [])
