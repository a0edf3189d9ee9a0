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
