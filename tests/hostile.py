"""Hostile inputs for fault tests: bad frames, bad member names, special entries and bad tarballs.

Everything is generated (OpenCV encodes the images), so no data files are needed. The makers
that write take a target path; `hostile_member_tar` returns what a correct index must find.
"""

import dataclasses
import gzip
import io
import random
import struct
import tarfile

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tar member to write.

    Attributes
    ----------
    name : str
        Member name; lone surrogates ``\\udc80``-``\\udcff`` stand for raw non-UTF-8 bytes.
    data : bytes
        Content of a regular file (kind ``"file"``) or of an unknown member type.
    kind : str
        ``"file"``, ``"symlink"``, ``"hardlink"``, ``"chardev"``, ``"blockdev"``, ``"dir"``,
        ``"fifo"``, or a single character used as a raw tar type flag.
    target : str
        Link target for ``"symlink"`` and ``"hardlink"``.
    """

    name: str
    data: bytes = b""
    kind: str = "file"
    target: str = ""


_TYPE_FLAGS = {
    "file": tarfile.REGTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
    "dir": tarfile.DIRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _pattern(seed: int, w: int, h: int) -> np.ndarray:
    """A deterministic BGR test pattern: smooth gradients plus a few flat blocks."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), np.full_like(x, seed * 37 % 256)], -1)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        image[y0 : y0 + h // 4, x0 : x0 + w // 4] = rng.integers(0, 256, 3)
    return image.astype(np.uint8)


def _encode(suffix: str, image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(suffix, image)
    assert ok, f"OpenCV could not encode a {image.shape} {image.dtype} image as {suffix}"
    return encoded.tobytes()


def good_jpeg(seed: int, w: int = 64, h: int = 48) -> bytes:
    """A valid baseline JPEG of a deterministic w x h colour pattern, encoded by OpenCV."""
    return _encode(".jpg", _pattern(seed, w, h))


def grayscale_jpeg(seed: int = 1, w: int = 64, h: int = 48) -> bytes:
    """A valid single-component (grayscale) JPEG."""
    return _encode(".jpg", cv2.cvtColor(_pattern(seed, w, h), cv2.COLOR_BGR2GRAY))


def png_bytes(seed: int = 2) -> bytes:
    """A valid 8-bit colour PNG (to be stored under a .jpg name)."""
    return _encode(".png", _pattern(seed, 64, 48))


def png16_bytes(seed: int = 3) -> bytes:
    """A valid 16-bit-per-channel colour PNG."""
    return _encode(".png", _pattern(seed, 64, 48).astype(np.uint16) * 257)


def random_bytes(seed: int = 4, size: int = 3000) -> bytes:
    """Random bytes that are no image format (to be stored under a .jpg name)."""
    data = random.Random(seed).randbytes(size)
    return b"\x00" + data[1:]  # never starts with a JPEG/PNG signature by chance


def truncated_jpeg(seed: int = 5) -> bytes:
    """The first half of a valid JPEG: the scan stops mid-way and there is no EOI marker."""
    data = good_jpeg(seed, 128, 96)
    return data[: len(data) // 2]


def _segments(jpeg: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split a baseline JPEG into its marker segments up to SOS, and the entropy-coded scan data."""
    segments = []
    position = 2  # after SOI
    while True:
        marker = jpeg[position + 1]
        length = int.from_bytes(jpeg[position + 2 : position + 4], "big")
        segments.append((marker, jpeg[position + 4 : position + 2 + length]))
        position += 2 + length
        if marker == 0xDA:
            assert jpeg.endswith(b"\xff\xd9"), "expected a single-scan JPEG ending with EOI"
            return segments, jpeg[position:-2]


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def corrupt_jpeg(seed: int = 6) -> bytes:
    """A JPEG whose headers are intact but whose scan has 32 inverted bytes mid-way.

    Decoders warn and return a garbled (or partly grey) picture rather than failing.
    """
    data = bytearray(good_jpeg(seed, 128, 96))
    _, scan = _segments(bytes(data))
    scan_start = len(data) - 2 - len(scan)
    middle = scan_start + len(scan) // 2
    for i in range(middle, middle + 32):
        data[i] ^= 0xFF
    return bytes(data)


def huge_header_jpeg(seed: int = 7, w: int = 30000, h: int = 30000) -> bytes:
    """A small valid JPEG whose SOF0 header is patched to claim w x h pixels (a decompression bomb)."""
    data = bytearray(good_jpeg(seed))
    sof = data.index(b"\xff\xc0")
    # SOF0 payload: precision (1 byte), then height and width (2 bytes each, big-endian)
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def cmyk_jpeg(seed: int = 8) -> bytes:
    """A four-component Adobe JPEG (CMYK), built from a grayscale JPEG without re-encoding.

    A baseline JPEG may code its components in separate (non-interleaved) scans; each scan of a
    1x1-sampled component is coded exactly like a grayscale scan, so the grayscale scan data is
    reused for C, M, Y and K, with the same quantisation and Huffman tables.
    """
    segments, scan = _segments(grayscale_jpeg(seed))
    tables = b"".join(_segment(marker, payload) for marker, payload in segments if marker in (0xDB, 0xC4))
    sof = next(payload for marker, payload in segments if marker == 0xC0)
    components = b"".join(bytes([component, 0x11, 0]) for component in (1, 2, 3, 4))
    # version 100, flags 0 and 0, transform 0: no colour transform, i.e. plain (inverted) CMYK
    adobe = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0)
    scans = b"".join(
        _segment(0xDA, bytes([1, component, 0x00, 0, 63, 0])) + scan for component in (1, 2, 3, 4)
    )
    return (
        b"\xff\xd8"
        + _segment(0xEE, adobe)
        + tables
        + _segment(0xC0, sof[:5] + b"\x04" + components)
        + scans
        + b"\xff\xd9"
    )


def write_tar(path, entries, tar_format: int = tarfile.PAX_FORMAT) -> None:
    """Write a tarball of `entries` (each an `Entry` or a ``(name, bytes)`` regular file).

    Names are written with UTF-8 and ``surrogateescape``, so lone surrogates in a name become
    raw non-UTF-8 bytes in the archive.
    """
    with tarfile.open(path, "w", format=tar_format, encoding="utf-8", errors="surrogateescape") as archive:
        for entry in entries:
            if not isinstance(entry, Entry):
                entry = Entry(*entry)
            info = tarfile.TarInfo(entry.name)
            info.type = _TYPE_FLAGS.get(entry.kind, entry.kind.encode("ascii"))
            info.mtime = 1_700_000_000
            info.mode = 0o755 if entry.kind == "dir" else 0o644
            info.linkname = entry.target
            if entry.kind in ("chardev", "blockdev"):
                info.devmajor, info.devminor = 1, 3
            has_data = entry.kind not in _TYPE_FLAGS or entry.kind == "file"
            info.size = len(entry.data) if has_data else 0
            archive.addfile(info, io.BytesIO(entry.data) if has_data else None)


def hostile_member_tar(path, tar_format: int = tarfile.PAX_FORMAT) -> dict:
    """Write a tarball of hostile members and return what a correct index must report.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write the tarball.
    tar_format : int
        ``tarfile.PAX_FORMAT`` or ``tarfile.GNU_FORMAT``. Only PAX can hold a NUL in a name,
        so that member is left out of GNU tarballs.

    Returns
    -------
    dict
        ``"frames"``: list of dicts ``{"name", "data", "case"}`` in tar order, ``name`` being the
        name the index must report; ``"skipped"``: list of dicts ``{"name", "kind"}``;
        ``"skipped_counts"``: dict kind -> count.
    """
    frames = [  # (name as written, name as indexed, data, case)
        ("good/frame_000.jpg", None, good_jpeg(0), "good jpeg"),
        ("good/deeper/frame_001.JPG", None, good_jpeg(1), "good jpeg, upper-case suffix"),
        ("empty.jpg", None, b"", "empty member"),
        ("random.jpg", None, random_bytes(), "random bytes"),
        ("truncated.jpg", None, truncated_jpeg(), "truncated jpeg"),
        ("corrupt.jpg", None, corrupt_jpeg(), "corrupt jpeg scan"),
        ("huge.jpg", None, huge_header_jpeg(), "header claims 30000x30000"),
        ("gray.jpg", None, grayscale_jpeg(), "grayscale jpeg"),
        ("cmyk.jpg", None, cmyk_jpeg(), "cmyk jpeg"),
        ("png-inside.jpg", None, png_bytes(), "png bytes named .jpg"),
        ("deep16.png", None, png16_bytes(), "16-bit png"),
        ("../escape.jpg", None, good_jpeg(10), "name: parent traversal"),
        ("../../../../etc/cron.d/x.jpg", None, good_jpeg(11), "name: deep traversal"),
        ("/abs/frame.jpg", None, good_jpeg(12), "name: absolute"),
        ("it's.jpg", None, good_jpeg(13), "name: single quote"),
        ('say "cheese".jpg', None, good_jpeg(14), "name: double quotes"),
        ("a;b.jpg", None, good_jpeg(15), "name: semicolon"),
        ("'; DROP TABLE images; --.jpg", None, good_jpeg(16), "name: sql injection"),
        ("  spaced  name .jpg", None, good_jpeg(17), "name: spaces"),
        ("new\nline.jpg", None, good_jpeg(18), "name: newline"),
        ("kaméra/日本語-фото.jpg", None, good_jpeg(19), "name: non-ascii"),
        ("bad-\udcff\udcfe.jpg", "bad-\\xff\\xfe.jpg", good_jpeg(20), "name: non-utf-8 bytes"),
        ("long/" + "d" * 150 + "/frame.jpg", None, good_jpeg(21), "name: longer than 100 bytes"),
        (".jpg", None, good_jpeg(22), "name: suffix only"),
        ("dup.jpg", None, good_jpeg(23), "duplicate name, first"),
        ("dup.jpg", None, good_jpeg(24), "duplicate name, second"),
    ]
    if tar_format == tarfile.PAX_FORMAT:
        frames.append(("nul-é\x00x.jpg", "nul-é\\x00x.jpg", good_jpeg(25), "name: NUL (pax only)"))
    skipped = [  # (entry, kind the index must report)
        (Entry("link.jpg", kind="symlink", target="/etc/passwd"), "symlink"),
        (Entry("hard.jpg", kind="hardlink", target="good/frame_000.jpg"), "hardlink"),
        (Entry("tty.jpg", kind="chardev"), "device"),
        (Entry("disk.jpg", kind="blockdev"), "device"),
        (Entry("frames.jpg", kind="dir"), "directory"),
        (Entry("pipe.jpg", kind="fifo"), "fifo"),
        (Entry("unknown.jpg", b"0123456789", kind="Q"), "other type"),
        (Entry("", good_jpeg(30)), "empty name"),
        (Entry("readme.txt", b"not a frame\n"), "not an image"),
        (Entry("frame_no_suffix", good_jpeg(31)), "not an image"),
    ]
    entries = [Entry(name, data) for name, _, data, _ in frames]
    # interleave skipped entries so frame offsets are checked around them
    for i, (entry, _) in enumerate(skipped):
        entries.insert(2 * i + 1, entry)
    write_tar(path, entries, tar_format)
    counts: dict[str, int] = {}
    for _, kind in skipped:
        counts[kind] = counts.get(kind, 0) + 1
    return {
        "frames": [{"name": indexed or name, "data": data, "case": case} for name, indexed, data, case in frames],
        "skipped": [{"name": entry.name, "kind": kind} for entry, kind in skipped],
        "skipped_counts": counts,
    }


def write_not_a_tar(path) -> None:
    """Write a text file (to be named x.tar) that is no tar archive."""
    with open(path, "wb") as file:
        file.write(b"this is a plain text file, not a tar archive\n" * 40)


def write_empty_tar(path) -> None:
    """Write a valid tar archive with no members (only the end-of-archive marker)."""
    write_tar(path, [])


def write_gzipped_tar(path, seed: int = 40) -> None:
    """Write a gzip-compressed tarball of two frames (name it .tar.gz, or .tar to disguise it)."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        for i in range(2):
            data = good_jpeg(seed + i)
            info = tarfile.TarInfo(f"frame_{i}.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with open(path, "wb") as file:
        file.write(gzip.compress(plain.getvalue(), mtime=0))


def write_truncated_tar(path, n_frames: int = 5, seed: int = 50) -> dict:
    """Write a tarball of `n_frames` JPEGs cut in the middle of the third member's data.

    Returns
    -------
    dict
        ``"kept"``: list of (name, bytes) of the frames wholly before the cut; ``"cut"``: the
        name of the member the cut falls in; ``"size"``: the truncated file size.
    """
    frames = [(f"clip/frame_{i:03d}.jpg", good_jpeg(seed + i)) for i in range(n_frames)]
    write_tar(path, frames)
    with tarfile.open(path) as archive:
        third = archive.getmembers()[2]
    size = third.offset_data + third.size // 2
    with open(path, "r+b") as file:
        file.truncate(size)
    return {"kept": frames[:2], "cut": frames[2][0], "size": size}


def write_sparse_tar(path, members) -> None:
    """Write a plain tar whose members are ``(name, head, size)``: the data of each is ``head`` followed by
    zeros up to ``size`` bytes, left as holes in the file, so that a member declaring 5 GiB costs no disk."""
    with open(path, "wb") as file:
        for name, head, size in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = size, 1_700_000_000
            file.write(info.tobuf(tarfile.GNU_FORMAT))
            file.write(head)
            file.seek(-(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE - len(head), io.SEEK_CUR)
        file.write(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
