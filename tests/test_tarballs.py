"""Tests of mpicolor.state.tarballs: finding data sets, indexing members by offset, reading frames."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bz2
import dataclasses
import hashlib
import io
import lzma
import pickle
import random
import shutil
import sqlite3
import struct
import subprocess
import tarfile

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
from mpicolor.state.tarballs import (
    IMAGE_SUFFIXES,
    BadTarball,
    Member,
    TarballIndex,
    _index_by_headers,
    _index_tarball,
    _Unhandled,
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
    index = index_tarball(path)
    assert dataclasses.replace(index, fingerprint=None) == TarballIndex(str(path), "empty.tar", [], {}, None)


def test_the_fingerprint_follows_the_member_table_size_and_modification_time(tmp_path):
    path = tmp_path / "a.tar"
    _three_frame_tar(str(path))
    first = index_tarball(str(path)).fingerprint
    assert first.size == os.path.getsize(path) and first.mtime_ns == os.stat(path).st_mtime_ns
    moved = tmp_path / "moved.tar"
    os.rename(path, moved)
    assert index_tarball(str(moved)).fingerprint == first  # a move keeps it
    _three_frame_tar(str(path), third_name="d.jpg")  # one name changed, same size
    os.utime(path, ns=(first.mtime_ns, first.mtime_ns))
    renamed = index_tarball(str(path)).fingerprint
    assert (renamed.size, renamed.mtime_ns) == (first.size, first.mtime_ns) and renamed.members != first.members


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


def test_a_member_is_a_frame_by_its_image_suffix_in_any_case(tmp_path):
    frame = good_jpeg(0, 16, 16)
    names = [f"f{number}{suffix}" for number, suffix in enumerate(IMAGE_SUFFIXES)]
    names += ["upper.JPG", "mixed.JpEg", "shout.PNG"]
    path = str(tmp_path / "suffixes.tar")
    write_tar(path, [Entry(name, frame) for name in names + ["notes.txt", "jpg", "no.jpg.txt", "dotless_jpg"]])
    index = index_tarball(path)
    assert [member.name for member in index.members] == names
    assert index.skipped == {"not an image": 4}


def test_a_plain_tar_is_indexed_from_its_headers_without_tarfile(tmp_path, monkeypatch):
    # what makes indexing fast is that no TarInfo is made (a race against tarfile's clock is a benchmark's, not a
    # test's): a tar of many members is indexed with tarfile unable to open anything, and gives tarfile's index
    n_members = 10_000
    path = str(tmp_path / "many.tar")
    frame = good_jpeg(0, 16, 16)
    write_tar(path, [(f"clip/frame_{i:05d}.jpg", frame) for i in range(n_members)])
    reference = _index_tarball(path, scan_headers=False)

    def no_tarfile(*args, **kwargs):
        raise AssertionError("tarfile was asked to open the archive")

    monkeypatch.setattr(tarfile, "open", no_tarfile)
    index = _index_tarball(path, scan_headers=True)
    assert len(index.members) == n_members
    assert (index.members, index.skipped, index.incomplete) == (reference.members, reference.skipped,
                                                                 reference.incomplete)


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


# --- the header scan against tarfile -------------------------------------------------------------


def _index_both_ways(path):
    """Index `path` with the header scan (as `index_tarball` does) and with tarfile alone.

    Each result is a TarballIndex, or the type and text of the exception raised.
    """
    results = []
    for scan_headers in (True, False):
        try:
            results.append(_index_tarball(str(path), scan_headers))
        except Exception as error:  # noqa: BLE001 - both ways must fail alike, whatever the error
            results.append(f"{type(error).__name__}: {error}")
    return results


def _header_scan_handles(path):
    """Whether the header scan indexes `path` by itself, without falling back to tarfile."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _index_by_headers(fd, os.fstat(fd).st_size)
    except _Unhandled:
        return False
    finally:
        os.close(fd)
    return True


def _write_good(path, tar_format):
    """Frames in subfolders with short, ustar-splittable and (but in ustar) long names, a folder and a readme."""
    entries = [
        Entry("clip_a", kind="dir"),
        ("clip_a/frames/frame_000.jpg", good_jpeg(0)),
        ("clip_b/" + "s" * 90 + "/" + "t" * 80 + "/frame_001.jpg", good_jpeg(1)),  # a ustar prefix
        ("README.md", b"# notes\n"),
        ("clip_a/frames/frame_002.jpeg", good_jpeg(2)),
    ]
    if tar_format != tarfile.USTAR_FORMAT:
        entries += [("clip_c/" + "u" * 300 + ".jpg", good_jpeg(3)), Entry("clip_c/" + "v" * 300, kind="dir"),
                    ("clip_c/" + "w" * 300 + ".jpg/", good_jpeg(4))]  # pax strips the slash
    write_tar(path, entries, tar_format)


def _write_infos(path, tar_format, infos, global_records=None):
    """Write `(TarInfo, data)` pairs as they are, after a pax global header if `global_records`."""
    with tarfile.open(path, "w", format=tar_format, pax_headers=global_records) as archive:
        for info, data in infos:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _info(name, **attributes):
    info = tarfile.TarInfo(name)
    for attribute, value in attributes.items():
        setattr(info, attribute, value)
    return info


def _write_global_header(path, records, n_frames=2):
    frames = [(_info("a.jpg"), good_jpeg(0)), (_info("long/" + "x" * 120 + ".jpg"), good_jpeg(1))]
    _write_infos(path, tarfile.PAX_FORMAT, frames[:n_frames], records)


def _write_pax_size(path, size_record):
    """A frame whose pax ``size`` record (200 bytes of its 300, or `size_record`) overrides the header."""
    data = good_jpeg(0)[:300]
    infos = [(_info("a.jpg", pax_headers={"size": size_record}), data), (_info("b.jpg"), good_jpeg(1))]
    _write_infos(path, tarfile.PAX_FORMAT, infos)


def _write_numbers(path, tar_format):
    """Numbers that need pax records (PAX) or base-256 fields (GNU): a big uid, a fractional mtime."""
    infos = [(_info("a.jpg", uid=3_000_000, gid=4_000_000, mtime=1_700_000_000.25), good_jpeg(0))]
    _write_infos(path, tar_format, infos + [(_info("b.jpg"), good_jpeg(1))])


def _write_types(path):
    """Old and rare type flags: a V7 directory and frame (type NUL), a contiguous file (type 7)."""
    entries = [Entry("old_dir/", kind="\0"), Entry("old.jpg", good_jpeg(0), kind="\0"),
               Entry("contiguous.jpg", good_jpeg(1), kind="7"), Entry("volume", kind="V")]
    write_tar(path, entries, tarfile.GNU_FORMAT)


def _patch_header(path, header, field, value, signed=False):
    """Overwrite bytes of the header at byte `header` from `field` on, then fix its checksum."""
    with open(path, "r+b") as file:
        file.seek(header)
        block = bytearray(file.read(tarfile.BLOCKSIZE))
        block[field : field + len(value)] = value
        block[148:156] = b" " * 8
        checksum = sum(struct.unpack("512b" if signed else "512B", block))
        block[148:156] = b"%06o\0 " % checksum
        file.seek(header)
        file.write(block)


def _write_patched(path, field, value, signed=False):
    """Two frames (the first with a non-ASCII name) whose second header is patched."""
    write_tar(path, [("kaméra.jpg", good_jpeg(0)), ("b\xe9.jpg", good_jpeg(1))], tarfile.GNU_FORMAT)
    with tarfile.open(path) as archive:
        second = archive.getmembers()[1].offset
    _patch_header(path, second, field, value, signed)


def _pax_record(keyword, value):
    """One pax record, ``b"<length> <keyword>=<value>\\n"``."""
    body = b" " + keyword + b"=" + value + b"\n"
    length = len(body)
    while length != len(body) + len(str(length)):  # the length counts its own digits
        length = len(body) + len(str(length))
    return str(length).encode() + body


def _write_pax_records(path, records):
    """A frame after a pax extended header holding `records` (bytes, written as they are)."""
    extended = tarfile.TarInfo("././@PaxHeader")
    extended.type, extended.size = tarfile.XHDTYPE, len(records)
    data = good_jpeg(0)
    frame = _info("frame.jpg", size=len(data))
    padding = b"\0" * (-len(records) % tarfile.BLOCKSIZE)
    with open(path, "wb") as file:
        file.write(extended.tobuf(tarfile.USTAR_FORMAT) + records + padding)
        file.write(frame.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE))
        file.write(b"\0" * (2 * tarfile.BLOCKSIZE))


def _write_damaged(path, damage):
    """Two frames, then damage to the third member (a GNU long name) or after it."""
    header = _three_frame_tar(path, tarfile.GNU_FORMAT, "x" * 200 + ".jpg")
    with tarfile.open(path) as archive:
        third = archive.getmembers()[2]
    assert third.size % tarfile.BLOCKSIZE, "the third member needs padding after its data"
    with open(path, "r+b") as file:
        if damage == "garbage header":
            file.seek(header)
            file.write(b"garbage!" * 64)
        elif damage == "bad checksum":
            file.seek(header + 148)
            file.write(b"0000001\0")
        else:
            file.truncate({
                "cut before header": header,
                "cut inside header": header + 100,
                "cut after long name": header + 2 * tarfile.BLOCKSIZE,
                "cut inside padding": third.offset_data + third.size + 1,
                "no end marker": -(-(third.offset_data + third.size) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE,
            }[damage])


def _gnu_tar(path, tar_format, extra=None):
    """Archive a folder of frames with GNU tar, with a long link target or a sparse file as `extra`."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    source = os.path.join(os.path.dirname(path), "source")
    deep = os.path.join(source, "long_" * 12, "deeper_" * 12)
    os.makedirs(os.path.join(source, "clip_a", "frames"))
    os.makedirs(deep)
    for i, folder in enumerate((os.path.join(source, "clip_a", "frames"), deep, source)):
        with open(os.path.join(folder, f"frame_{i}.jpg"), "wb") as file:
            file.write(good_jpeg(i))
    with open(os.path.join(source, "kaméra é.jpg"), "wb") as file:
        file.write(good_jpeg(9))
    os.symlink("clip_a/frames/frame_0.jpg", os.path.join(source, "link.jpg"))
    options = []
    if extra == "long link":
        os.symlink("t" * 150 + ".jpg", os.path.join(source, "long_link.jpg"))
    elif extra == "sparse":
        with open(os.path.join(source, "holes.jpg"), "wb") as file:
            file.truncate(1 << 20)
            file.write(b"\xff\xd8")
        options = ["--sparse"]
    # v7 cannot hold names over 99 bytes: tar leaves them out and exits with 2
    subprocess.run(["tar", "-cf", str(path), f"--format={tar_format}", *options, "-C", source, "."],
                   capture_output=True, check=tar_format != "v7", timeout=60)


def _write_hostile_truncated(path):
    write_truncated_tar(path)


# name -> (writer of the tarball, whether the header scan must index it by itself; None: indexing raises)
_CORPUS = {
    "hostile pax": (lambda path: hostile_member_tar(path, tarfile.PAX_FORMAT), True),
    "hostile gnu": (lambda path: hostile_member_tar(path, tarfile.GNU_FORMAT), True),
    "good ustar": (lambda path: _write_good(path, tarfile.USTAR_FORMAT), True),
    "good gnu": (lambda path: _write_good(path, tarfile.GNU_FORMAT), True),
    "good pax": (lambda path: _write_good(path, tarfile.PAX_FORMAT), True),
    "pax global comment": (lambda path: _write_global_header(path, {"comment": "made by git archive"}), True),
    "pax global path": (lambda path: _write_global_header(path, {"path": "everything.jpg"}), False),
    "pax global header only": (lambda path: _write_global_header(path, {"comment": "x"}, n_frames=0), None),
    "pax size record": (lambda path: _write_pax_size(path, "200"), True),
    "pax size record with a space": (lambda path: _write_pax_size(path, " 200"), False),
    "pax records of numbers": (lambda path: _write_numbers(path, tarfile.PAX_FORMAT), True),
    "gnu base-256 numbers": (lambda path: _write_numbers(path, tarfile.GNU_FORMAT), True),
    "pax record": (lambda path: _write_pax_records(path, _pax_record(b"path", b"renamed.jpg")), True),
    "pax records, NUL then junk": (lambda path: _write_pax_records(
        path, _pax_record(b"path", b"renamed.jpg") + b"\0junk"), False),
    "pax record, junk": (lambda path: _write_pax_records(path, _pax_record(b"path", b"x.jpg") + b"junk"), False),
    "pax record, length too long": (lambda path: _write_pax_records(path, b"30 path=renamed.jpg\n"), False),
    "pax record, length 0": (lambda path: _write_pax_records(path, b"0 path=renamed.jpg\n"), None),
    "pax record, no newline": (lambda path: _write_pax_records(path, b"20 path=renamed.jpg "), False),
    "pax record, no equals sign": (lambda path: _write_pax_records(path, b"19 path renamed.jpg\n"), False),
    "pax hdrcharset BINARY": (lambda path: _write_pax_records(
        path, _pax_record(b"hdrcharset", b"BINARY") + _pax_record(b"path", b"\xff.jpg")), True),
    "pax hdrcharset not ASCII": (lambda path: _write_pax_records(path, _pax_record(b"hdrcharset", b"\xff")), None),
    "pax sparse record": (lambda path: _write_pax_records(path, _pax_record(b"GNU.sparse.size", b"10")), False),
    "v7 and contiguous types": (_write_types, True),
    "space-padded numbers": (lambda path: _write_patched(path, 100, b"   644 \0     0 \0"), True),
    "signed checksum": (lambda path: _write_patched(path, 0, "bé.jpg".encode(), signed=True), True),
    "invalid mode": (lambda path: _write_patched(path, 100, b"0 644\0\0\0"), False),
    "huge base-256 size": (lambda path: _write_patched(path, 124, b"\x80" + (1 << 80).to_bytes(11, "big")), False),
    "negative base-256 size": (lambda path: _write_patched(path, 124, b"\xff" * 12), False),
    "empty": (write_empty_tar, True),
    "truncated": (_write_hostile_truncated, False),
    "first member cut": (lambda path: (write_tar(path, [("a.jpg", good_jpeg(0))]), os.truncate(path, 522)), False),
    **{damage: (lambda path, damage=damage: _write_damaged(path, damage), False) for damage in (
        "cut before header", "cut inside header", "cut after long name", "cut inside padding",
        "garbage header", "bad checksum", "no end marker")},
    "not a tar": (write_not_a_tar, None),
    "short non-tar": (lambda path: path.write_bytes(b"\0" * 100), None),
    "gzip": (write_gzipped_tar, None),
    "zero bytes": (lambda path: path.write_bytes(b""), None),
    **{f"gnu tar {tar_format}": (lambda path, tar_format=tar_format: _gnu_tar(path, tar_format), True)
       for tar_format in ("gnu", "oldgnu", "posix", "ustar", "v7")},
    **{f"gnu tar {tar_format}, {extra}": (lambda path, tar_format=tar_format, extra=extra: _gnu_tar(
        path, tar_format, extra), extra == "long link" and tar_format == "posix")
       for tar_format in ("gnu", "posix") for extra in ("long link", "sparse")},
}


@pytest.mark.parametrize("case", list(_CORPUS))
def test_header_scan_gives_what_tarfile_gives(tmp_path, case):
    write, scanned = _CORPUS[case]
    path = tmp_path / "case.tar"
    write(path)
    fast, reference = _index_both_ways(path)
    assert fast == reference
    if scanned is None:
        assert isinstance(reference, str)
    else:
        assert isinstance(reference, TarballIndex)
        assert _header_scan_handles(path) == scanned


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_header_scan_gives_what_tarfile_gives_when_cut_or_corrupted_anywhere(tmp_path, tar_format):
    whole = tmp_path / "hostile.tar"
    hostile_member_tar(whole, tar_format)
    data = whole.read_bytes()
    with tarfile.open(whole) as archive:
        headers = [info.offset for info in archive.getmembers()]
    path = tmp_path / "damaged.tar"
    rng = random.Random(tar_format)
    for header in headers:
        for cut in (0, 1, 100, 511, 512, 513, 1024, 1536):
            path.write_bytes(data[: header + cut])
            fast, reference = _index_both_ways(path)
            assert fast == reference, f"cut at byte {header + cut}"
        for _ in range(6):  # one corrupt byte in the header or the block after it
            damaged = bytearray(data)
            damaged[header + rng.randrange(1024)] = rng.randrange(256)
            path.write_bytes(damaged)
            fast, reference = _index_both_ways(path)
            assert fast == reference, f"corrupt byte after byte {header}"


@pytest.mark.timeout(20)
def test_a_negative_size_that_would_loop_tarfile_for_ever_is_corrupt(tmp_path):
    # base-256 -512: tarfile steps back onto the same header again and again
    path = tmp_path / "loop.tar"
    _write_patched(path, 124, b"\xff" * 10 + b"\xfe\x00")
    index = index_tarball(str(path))
    assert [member.name for member in index.members] == ["kaméra.jpg"]
    assert "negative size" in index.incomplete
