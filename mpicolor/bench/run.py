"""Whole runs under real mpiexec, and ``mpicolor bench run`` (1 and 2 ranks, with and without a CPU hog).

The helpers here (`timed_run`, `mpiexec_command`, `pack_frames`, `median`) serve every benchmark of a whole run.
Every run is a real ``mpiexec ... mpicolor run``; its numbers come from the run's own ``run-summary.json``
(wall time from the moment every rank is ready to the end, so that Python and MPI start-up are aside;
per-rank frames and busy seconds).
"""

import functools
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

from mpicolor.state.output_dir import RUN_SUMMARY

DEFAULT_FRAMES = os.path.join("..", "shared", "data", "frames", "hd")


def add_run_arguments(parser):
    parser.add_argument("--frames", default=DEFAULT_FRAMES,
                        help=f"folder of real JPEG frames to pack (default {DEFAULT_FRAMES})")
    parser.add_argument("--copies", type=int, default=24,
                        help="each frame is packed this many times under distinct names (default 24)")
    parser.add_argument("--tarballs", type=int, default=4, help="tarballs to spread the frames over (default 4)")
    parser.add_argument("--out", default="bench-out/run", help="work folder (default bench-out/run)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the numbers to FILE")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported (default 3)")


def pack_frames(frames_dir, out_dir, copies, tarballs):
    """Pack every JPEG of ``frames_dir`` ``copies`` times into ``tarballs`` tarballs; return the frame count."""
    names = sorted(name for name in os.listdir(frames_dir) if name.lower().endswith((".jpg", ".jpeg")))
    if not names:
        raise FileNotFoundError(f"no JPEG frames in {frames_dir}")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    members = []
    for copy in range(copies):
        for name in names:
            with open(os.path.join(frames_dir, name), "rb") as frame:
                members.append((f"copy{copy:03d}/{name}", frame.read()))
    per_tarball = -(-len(members) // tarballs)
    for number in range(tarballs):
        with tarfile.open(os.path.join(out_dir, f"set{number:02d}.tar"), "w") as tar:
            for name, data in members[number * per_tarball:(number + 1) * per_tarball]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return len(members)


def mpiexec_path():
    """The ``mpiexec`` beside this Python (the MPICH or Open MPI wheel's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec") or "mpiexec"


def is_open_mpi(mpiexec):
    """True when ``mpiexec`` is Open MPI's (``mpiexec (Open MPI) 5.0.11``); MPICH's says ``HYDRA``."""
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return "Open MPI" in version.stdout


@functools.cache
def mpiexec_command():
    """The start of every launch: `mpiexec_path`, and with Open MPI the flags that make it run here as MPICH's
    hydra does: more ranks than cores (``--oversubscribe``; ``--bind-to none``, or ranks beyond the core count
    pile onto the same cores) and, for root, ``--allow-run-as-root``.

    Returns
    -------
    tuple of str
    """
    mpiexec = mpiexec_path()
    if not is_open_mpi(mpiexec):
        return (mpiexec,)
    return (mpiexec, "--oversubscribe", "--bind-to", "none", *(["--allow-run-as-root"] if os.geteuid() == 0 else []))


def timed_run(input_dir, output_dir, ranks, cores=None, options=()):
    """One ``mpiexec`` run into a fresh OUTPUT_DIR; returns its run-summary.json, plus ``job_write_bytes``:
    what every process of the job wrote to storage (the kernel adds a reaped child's ``write_bytes`` to its
    parent's ``ru_oublock``, in 512-byte blocks, and mpiexec reaps its ranks).

    ``cores`` pins rank i to core ``cores[i]`` with taskset (MPMD syntax), so that a CPU hog can share a
    known core; ``options`` are more ``mpicolor run`` flags.
    """
    shutil.rmtree(output_dir, ignore_errors=True)
    program = [sys.executable, "-m", "mpicolor", "run", input_dir, output_dir, *options]
    if cores is None:
        command = [*mpiexec_command(), "-n", str(ranks), *program]
    else:
        command = [*mpiexec_command()]
        for rank in range(ranks):
            command += (([":"] if rank else []) + ["-n", "1", "taskset", "-c", str(cores[rank]), *program])
    blocks_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {finished.returncode}:\n{finished.stderr}")
    with open(os.path.join(output_dir, RUN_SUMMARY)) as stream:
        summary = json.load(stream)
    summary["job_write_bytes"] = 512 * (resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock - blocks_before)
    return summary


def separate_runs(input_dir, out_dir):
    """Two 1-rank runs at once, each on half of the tarballs: what 2 cores give with no coordination at all.

    Returns a summary in the shape of run-summary.json (wall: the slower run's; frames and ranks: both).
    """
    tarballs = sorted(os.listdir(input_dir))
    halves = []
    for half, names in enumerate((tarballs[::2], tarballs[1::2])):
        folder = os.path.join(out_dir, f"input{half}")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for name in names:
            os.symlink(os.path.abspath(os.path.join(input_dir, name)), os.path.join(folder, name))
        halves.append(folder)
    program = [*mpiexec_command(), "-n", "1", sys.executable, "-m", "mpicolor", "run"]
    jobs = []
    for half, folder in enumerate(halves):
        output = os.path.join(out_dir, f"output{half}")
        shutil.rmtree(output, ignore_errors=True)
        jobs.append((subprocess.Popen([*program, folder, output], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True), output))
    summaries = []
    for job, output in jobs:
        _, log = job.communicate()
        if job.returncode != 0:
            raise RuntimeError(f"a separate run failed with status {job.returncode}:\n{log}")
        with open(os.path.join(output, RUN_SUMMARY)) as stream:
            summaries.append(json.load(stream))
    return {"wall": max(s["wall"] for s in summaries), "frames": sum(s["frames"] for s in summaries),
            "ranks": {str(i): s["ranks"]["0"] for i, s in enumerate(summaries)}}


def balance(summary):
    """Wall time against the ideally balanced time, ``frames / sum of the ranks' own rates``."""
    rates = [rank["frames"] / rank["busy"] for rank in summary["ranks"].values() if rank["busy"] > 0]
    ideal = summary["frames"] / sum(rates)
    # a static half/half split ends when the slowest rank has done its half
    static = max(summary["frames"] / len(rates) / rate for rate in rates)
    return summary["wall"] / ideal, static / ideal, rates


def median(values):
    """The median of ``values``, leaving out None; None when nothing is left.

    For an even count it is the mean of the two middle values (`statistics.median`); pick a run by
    its median with `statistics.median_high`, which is always one of the values.
    """
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def run_run_bench(args):
    if not os.path.isdir(args.frames):
        print(f"mpicolor bench run: frames folder {args.frames} does not exist (it is ../shared/data/frames/hd "
              "beside a checkout; pass --frames DIR)", file=sys.stderr)
        return 2
    input_dir = os.path.join(args.out, "input")
    frames = pack_frames(args.frames, input_dir, args.copies, args.tarballs)
    print(f"{frames} frames from {args.frames} in {args.tarballs} tarballs; {args.repeat} runs per case, "
          f"medians shown")
    cases = {}
    for _ in range(args.repeat):
        for ranks in (1, 2):
            cases.setdefault(f"{ranks} rank{'s' * (ranks > 1)}", []).append(
                timed_run(input_dir, os.path.join(args.out, f"n{ranks}"), ranks))
        cases.setdefault("2 separate 1-rank runs on half the data each (no MPI)", []).append(
            separate_runs(input_dir, os.path.join(args.out, "separate")))
        hog = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"])
        try:
            cases.setdefault("2 ranks, rank 1 shares its core with a CPU hog", []).append(
                timed_run(input_dir, os.path.join(args.out, "hog"), 2, cores=(0, 1)))
        finally:
            hog.kill()
            hog.wait()
    rows = []
    for case, summaries in cases.items():
        walls = [summary["wall"] for summary in summaries]
        wall = statistics.median_high(walls)
        ratio, static, rates = balance(summaries[walls.index(wall)])
        rows.append({"case": case, "wall_s": wall, "frames_per_s": frames / wall, "balance": ratio,
                     "static_split": static, "rank_rates": rates})
    one = rows[0]["frames_per_s"]
    print(f"\n{'case':56s} {'wall s':>7s} {'frames/s':>9s} {'vs 1 rank':>9s} {'wall/ideal':>10s} "
          f"{'static/ideal':>12s}  per-rank frames/s while busy")
    for row in rows:
        row["speedup"] = row["frames_per_s"] / one
        print(f"{row['case']:56s} {row['wall_s']:7.2f} {row['frames_per_s']:9.1f} {row['speedup']:8.2f}x "
              f"{row['balance']:10.3f} {row['static_split']:12.3f}  "
              f"{', '.join(f'{rate:.1f}' for rate in row['rank_rates'])}")
    print("\nwall/ideal: the run's wall time over frames / (sum of the ranks' own rates); static/ideal: the same "
          "for a static half/half split, computed from the measured rates.")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"frames": frames, "cases": rows, "when": time.strftime("%Y-%m-%d %H:%M")}, stream, indent=1)
    return 0
