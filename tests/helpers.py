"""Helpers of the tests: bundled real frames, tarballs, launching real ``mpiexec``, reading outputs."""

import io
import os
import sqlite3
import subprocess
import sys
import tarfile

from mpicolor.bench.run import mpiexec
from mpicolor.state.checkpoint import Checkpoint, CheckpointReader
from mpicolor.state.results import PARTIAL, PENDING

TESTS = os.path.dirname(os.path.abspath(__file__))
FRAMES = os.path.join(TESTS, "data", "frames")
SHARED_DATA = os.path.join(TESTS, "..", "..", "shared", "data")


def bundled_frames():
    """Paths of the bundled real frames, sorted."""
    return sorted(os.path.join(FRAMES, name) for name in os.listdir(FRAMES) if name.endswith(".jpg"))


def pack_tarball(path, members):
    """Write a plain tar of ``(name, bytes)`` members."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def pack_scenes(folder):
    """Three tarballs of the bundled frames, one per scene, frames inside a subfolder as a packer puts them."""
    scenes = {}
    for path in bundled_frames():
        scenes.setdefault(os.path.basename(path).split("_")[0], []).append(path)
    for scene, paths in scenes.items():
        members = []
        for path in paths:
            with open(path, "rb") as frame:
                members.append((f"{scene}/{os.path.basename(path)}", frame.read()))
        pack_tarball(os.path.join(folder, f"{scene}.tar"), members)
    return sorted(f"{scene}.tar" for scene in scenes)


# the benchmarks' launcher lookup, under the name the tests use
mpiexec_path = mpiexec


def mpicolor_command(ranks, *args):
    """The command line of ``mpiexec -n ranks python -m mpicolor args...``."""
    return [mpiexec_path(), "-n", str(ranks), sys.executable, "-m", "mpicolor", *map(str, args)]


def run_mpicolor(ranks, *args, timeout=120, **kwargs):
    """Run mpicolor under real mpiexec with a timeout, so that a hang fails instead of blocking CI."""
    return subprocess.run(mpicolor_command(ranks, *args), capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def read_sqlite(path):
    """All tables of an output file as sorted-key dicts of row lists."""
    connection = sqlite3.connect(path)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {table: connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in tables}
    finally:
        connection.close()


def read_checkpoint(output_dir):
    """``(settings, {name: TarballResults})`` of every tarball in OUTPUT_DIR's checkpoint; raises if any part of
    it cannot be read (no silent fallback)."""
    with CheckpointReader(str(output_dir)) as reader:
        return reader.settings, {name: reader.read(name) for name in reader.names()}


def make_partial(output_dir, name, pending):
    """Turn a finished tarball of OUTPUT_DIR back into the state a crash leaves: ``pending`` frames not computed
    yet in the checkpoint, and no sqlite file."""
    checkpoint = Checkpoint(str(output_dir))
    checkpoint.open()
    results = checkpoint.read(name)
    results.backend[pending] = PENDING
    results.packed[pending] = 0
    results.shares[pending] = 0
    results.status = PARTIAL
    checkpoint.save(checkpoint.settings, [results])
    os.remove(output_dir / f"hist_{name}_db.sqlite")


def outputs(output_dir):
    """Every sqlite file's tables, by file name."""
    return {name: read_sqlite(os.path.join(output_dir, name))
            for name in sorted(os.listdir(output_dir)) if name.endswith(".sqlite")}


# the tests' video clips: every bundled frame shown for CLIP_FRAMES_PER_PHOTO frames of a slow pan, a keyframe
# every CLIP_KEYFRAME_INTERVAL frames, at CLIP_RATE frames per second
CLIP_SIZE, CLIP_RATE, CLIP_FRAMES_PER_PHOTO, CLIP_KEYFRAME_INTERVAL = (256, 144), 25, 8, 12
CLIP_FRAMES = 12 * CLIP_FRAMES_PER_PHOTO


def clip_frames(n_frames=CLIP_FRAMES):
    """BGR frames of the tests' clips: a pan across each bundled frame in turn, ``n_frames`` in all."""
    import cv2

    from mpicolor.bench.videos import panning_frames

    photos = [cv2.imread(path) for path in bundled_frames()]
    frames = [frame for photo in photos for frame in panning_frames(photo, CLIP_FRAMES_PER_PHOTO, CLIP_SIZE)]
    return (frames * (-(-n_frames // len(frames))))[:n_frames]


def make_clip(path, codec, **options):
    """Encode `clip_frames` with `mpicolor.bench.videos.write_clip` (a keyframe every 12 frames unless told)."""
    from mpicolor.bench.videos import write_clip

    options.setdefault("keyframe_interval", CLIP_KEYFRAME_INTERVAL)
    write_clip(str(path), clip_frames(options.pop("n_frames", CLIP_FRAMES)), codec, rate=CLIP_RATE, threads=1,
               **options)
    return str(path)


def damage_packets(source, target, positions):
    """Copy a video, overwriting the middle third of the packets at these decode positions with noise.

    The middle, since a Matroska packet's position is that of its block header, a few bytes before the data.

    Returns
    -------
    list of int
        The presentation numbers of the damaged frames (as `mpicolor.state.videos` numbers frames).
    """
    import av
    import numpy as np

    with av.open(source) as container:
        stream = container.streams.video[0]
        packets = [(packet.pos, packet.size, packet.pts) for packet in container.demux(stream) if packet.size]
    with open(source, "rb") as original:
        data = bytearray(original.read())
    noise = np.random.default_rng(0)
    for position in positions:
        start, size, _ = packets[position]
        data[start + size // 3:start + 2 * size // 3] = noise.integers(0, 256, 2 * size // 3 - size // 3,
                                                                        dtype=np.uint8).tobytes()
    with open(target, "wb") as copy:
        copy.write(bytes(data))
    ranks = sorted(pts for _, _, pts in packets)
    return [ranks.index(packets[position][2]) for position in positions]
