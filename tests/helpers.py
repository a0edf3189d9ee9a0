"""Helpers of the tests: bundled real frames, tarballs, launching real ``mpiexec``, reading outputs."""

import argparse
import io
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time

import cv2
import h5py
import numpy as np
import pytest

from mpicolor import cli
from mpicolor.bench import run as bench_run
from mpicolor.job.config import RunConfig
from mpicolor.state.checkpoint import CHECKPOINT, Checkpoint, CheckpointReader
from mpicolor.state.output_dir import LOCK
from mpicolor.state.results import CPU, FAILED, GPU, PARTIAL, PENDING, TarballResults
from mpicolor.state.sqlite import write_sqlite_files

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


def many_frames_input(folder, tarballs=6, copies=2):
    """INPUT_DIR of several tarballs holding the bundled frames under distinct names."""
    folder.mkdir()
    frames = [open(path, "rb").read() for path in bundled_frames()]
    for number in range(tarballs):
        members = [(f"t{number}/{copy:02d}_{i:02d}.jpg", frame) for copy in range(copies)
                   for i, frame in enumerate(frames)]
        pack_tarball(str(folder / f"set{number:02d}.tar"), members)
    return folder


def tiny_tarballs(folder, count, frames):
    """INPUT_DIR of ``count`` tarballs of ``frames`` tiny members each (not images: for ``--simulate`` runs)."""
    folder.mkdir()
    for number in range(count):
        pack_tarball(str(folder / f"set{number}.tar"), [(f"{n:05d}.jpg", b"%d-%d" % (number, n))
                                                       for n in range(frames)])
    return folder


def simulated_config(tmp_path, input_dir, **settings):
    """The settings of a ``--simulate 0`` run from ``input_dir`` into ``tmp_path/out``."""
    return RunConfig(str(input_dir), str(tmp_path / "out"), simulate=0.0, split=(1, 0), checkpoint_every=3600,
                     **settings)


def command_line_config(input_dir, output_dir, *flags):
    """The settings that ``mpicolor run INPUT_DIR OUTPUT_DIR flags...`` runs with (`mpicolor.cli`), for a run in
    process (`mpicolor.job.coordinator.run_serial`); ValueError for a bad setting, as rank 0 meets it."""
    return cli.run_config(cli.build_parser().parse_args(["run", str(input_dir), str(output_dir), *map(str, flags)]))


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def mpicolor_command(ranks, *args):
    """The command line of ``mpiexec -n ranks python -m mpicolor args...``, with what the MPI in use needs
    (`mpicolor.bench.run.mpiexec_command`)."""
    return [*bench_run.mpiexec_command(), "-n", str(ranks), sys.executable, "-m", "mpicolor", *map(str, args)]


def run_mpicolor(ranks, *args, timeout=120, **kwargs):
    """Run mpicolor under real mpiexec with a timeout, so that a hang fails instead of blocking CI."""
    return subprocess.run(mpicolor_command(ranks, *args), capture_output=True, text=True, timeout=timeout,
                          **kwargs)


# Run by every Python process of a job started with `job_environment` (as its sitecustomize): each rank writes its
# pid to rank-N, N from MPI itself, so that a test finds a rank's process under any MPI; then `inject` runs,
# with ``rank`` set.
RANK_RECORDER = """\
import os
from mpi4py import MPI
rank = MPI.COMM_WORLD.Get_rank()
with open(os.path.join({folder!r}, f"rank-{{rank}}"), "w") as pid_file:
    pid_file.write(str(os.getpid()))
"""


def job_environment(folder, inject=""):
    """The environment of a job whose ranks record their pids in ``folder`` (`rank_pid`) and run ``inject``
    (Python source; ``rank`` is set) when they start."""
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(RANK_RECORDER.format(folder=str(folder)) + inject)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))


def rank_pid(folder, rank, timeout=60):
    """The pid of ``rank`` of a job started with `job_environment`, once it has started."""
    path = folder / f"rank-{rank}"
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        if time.monotonic() > deadline:
            pytest.fail(f"rank {rank} did not start within {timeout} s")
        time.sleep(0.01)
    return int(path.read_text())


def job_family(root):
    """The pids of a launcher and all its descendants (hydra's ranks run in sessions of their own, so a process
    group does not reach them)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    family = {root}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    return family


def kill_job(job):
    """SIGKILL a launcher and everything below it (what is left of a job that hung or was to die)."""
    for pid in job_family(job.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_lock(job, output_dir, timeout=60):
    """Wait until rank 0 of ``job`` holds OUTPUT_DIR's lock (or the job ended)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(output_dir, LOCK)) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def checkpoint_datasets(output_dir):
    """Every dataset and the status of every tarball in the live checkpoint."""
    found = {}
    with h5py.File(os.path.join(output_dir, CHECKPOINT), "r") as h5:
        for name, group in h5["tarballs"].items():
            found[name] = {key: group[key][...].tolist() for key in group} | {"status": group.attrs["status"]}
    return found


def done_in_checkpoint(output_dir, name):
    """Frames of tarball ``name`` done in the live checkpoint of a running job (0 before it has any)."""
    try:
        backend = checkpoint_datasets(output_dir)[name]["backend"]
    except (OSError, KeyError):
        return 0
    return len(backend) - backend.count(PENDING)


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


# ---- the tools: videos to pack, an OUTPUT_DIR written without a run, their commands in process ----

# the tiny test video: solid frames of distinct colours, 10 frames per second
TINY_FPS, TINY_FRAMES, TINY_SIZE = 10, 25, (64, 48)


def command(module, *argv):
    """Run ``mpicolor <module> argv...`` in this process, through the module's own argparse flags."""
    parser = argparse.ArgumentParser(prog=f"mpicolor {module.__name__.rsplit('.', 1)[-1]}")
    module.add_arguments(parser)
    return module.main(parser.parse_args([str(arg) for arg in argv]))


def tiny_colours(n_frames=TINY_FRAMES):
    """RGB of each frame of the tiny video, far enough apart that JPEG cannot blur one into another.

    Returns
    -------
    ndarray of shape (n_frames, 3), uint8
    """
    index = np.arange(n_frames)
    return np.stack([index * 10, 250 - index * 10, (index * 97) % 256], axis=1).astype(np.uint8)


def make_video(path, n_frames=TINY_FRAMES):
    """A Motion-JPEG AVI of solid frames in :func:`tiny_colours`, made with OpenCV's VideoWriter."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), TINY_FPS, TINY_SIZE)
    assert writer.isOpened(), "OpenCV cannot write MJPG AVI here"
    for red, green, blue in tiny_colours(n_frames).tolist():
        writer.write(np.full((TINY_SIZE[1], TINY_SIZE[0], 3), (blue, green, red), np.uint8))
    writer.release()
    return str(path)


# the stored settings of `synthetic_outputs`
SYNTHETIC_SETTINGS = {"clusters": 3, "method": "fast", "seed": 0, "scale": 1, "max_pixels": 1000, "label": "db",
                      "version": "test"}


def tarball_results(name, frames, packed, shares, backend, failures=None, status=None):
    """A :class:`TarballResults` with these rows; status from the backends unless given."""
    tarball = TarballResults.empty(name, frames, len(packed[0]))
    tarball.record(np.arange(len(frames)), np.array(packed, np.uint32), np.array(shares, np.float32),
                   np.array(backend, np.uint8), failures or {})
    tarball.settle()
    tarball.status = status or tarball.status
    return tarball


def synthetic_outputs(output_dir):
    """An OUTPUT_DIR written by the state modules themselves, without a run:

    ``b.tar`` complete: ``b/2.jpg`` (tar position 0) red over green, ``b/1.jpg`` blue, ``b/3.jpg`` failed;
    ``a.tar`` partial: ``a/1.jpg`` white/black half and half, ``a/2.jpg`` pending.
    In render order: a/1 (white/black), a/2 (pending), b/1 (blue), b/2 (red/green), b/3 (failed).
    """
    os.makedirs(output_dir, exist_ok=True)
    complete = tarball_results("b.tar", ["b/2.jpg", "b/1.jpg", "b/3.jpg"],
                               [[0xFF0000, 0x00FF00, 0], [0x0000FF, 0, 0], [0, 0, 0]],
                               [[0.75, 0.25, 0], [1, 0, 0], [0, 0, 0]], [CPU, GPU, FAILED],
                               {2: "not a JPEG"})
    partial = tarball_results("a.tar", ["a/1.jpg", "a/2.jpg"], [[0xFFFFFF, 0x000000, 0], [0, 0, 0]],
                              [[0.5, 0.5, 0], [0, 0, 0]], [CPU, PENDING])
    Checkpoint(str(output_dir)).save(SYNTHETIC_SETTINGS, [complete, partial])
    write_sqlite_files(str(output_dir), "db", [complete], SYNTHETIC_SETTINGS)
    return output_dir


def read_png(path):
    """A PNG as RGBA, shape (height, width, 4)."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)


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


def write_audio_only(path):
    """An MP4 holding one AAC stream and no video."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, k * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return str(path)


def write_unknown_codec(folder):
    """An MJPEG AVI of 5 frames, and the same file with a codec tag no decoder knows: ``(mjpeg.avi, unknown.avi)``."""
    import cv2
    import numpy as np

    avi = folder / "mjpeg.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for value in range(5):
        writer.write(np.full((48, 64, 3), value * 40, np.uint8))
    writer.release()
    unknown = folder / "unknown.avi"
    unknown.write_bytes(avi.read_bytes().replace(b"MJPG", b"ZZZZ"))
    return str(avi), str(unknown)
