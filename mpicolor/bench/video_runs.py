"""``mpicolor bench videos``: a run on videos against ``pack`` then a run on the tarballs, side by side.

For every clip (the 1080p H.264 and AV1 clips of `mpicolor.bench.videos.make_bench_clips`, and
``car-detection.mp4``), every frame, each under ``mpiexec -n RANKS``:

(a) ``mpicolor run`` on a folder holding the video;
(b) ``mpicolor pack`` of the video (JPEG quality 90, what users ran before), then ``mpicolor run`` on its tarballs.

The two alternate their order from one repeat to the next, and the table gives medians and the ratios of the
medians. Times are end to end, each command's wall time as the shell sees it (Python and MPI start-up
included, the same for both). CPU is what every process of the commands spent (user + system, from the
children's rusage: mpiexec reaps its ranks), per frame. Bytes read are those of the files each path reads
from start to end: the video for (a); the video (by ``pack``) and the tarballs (by ``run``) for (b).
"""

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

from mpicolor.bench.run import mpiexec_command
from mpicolor.bench.videos import make_bench_clips

DEFAULT_FRAMES = os.path.join("..", "shared", "data", "frames", "hd")
DEFAULT_VIDEOS = [os.path.join("..", "shared", "data", "video", "car-detection.mp4")]


def add_videos_arguments(parser):
    """The flags of ``mpicolor bench videos``."""
    parser.add_argument("videos", nargs="*", metavar="VIDEO",
                        help=f"more clips to run besides the 1080p ones (default {' '.join(DEFAULT_VIDEOS)})")
    parser.add_argument("--frames", default=DEFAULT_FRAMES, metavar="DIR",
                        help=f"photographs the 1080p H.264 and AV1 clips are made of (default {DEFAULT_FRAMES})")
    parser.add_argument("--clips", default=os.path.join("bench-out", "video-clips"), metavar="DIR",
                        help="where the 1080p clips are kept (default bench-out/video-clips)")
    parser.add_argument("--out", default=os.path.join("bench-out", "videos"), metavar="DIR",
                        help="work folder (default bench-out/videos)")
    parser.add_argument("--ranks", type=int, default=2, help="ranks of every command (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path per clip (default 3)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the numbers to FILE")


def timed(command):
    """Run ``command``; return (wall seconds, CPU seconds of it and every process it reaped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {finished.returncode}:\n{finished.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def frames_computed(output_dir):
    """Frames the run in ``output_dir`` computed, from its run-summary.json."""
    with open(os.path.join(output_dir, "run-summary.json")) as stream:
        return json.load(stream)["frames"]


def mpicolor(ranks, *args):
    return [*mpiexec_command(), "-n", str(ranks), sys.executable, "-m", "mpicolor", *map(str, args)]


def from_video(clip, work, ranks):
    """Path (a): ``run`` on a folder holding the clip."""
    input_dir, output_dir = os.path.join(work, "a-input"), os.path.join(work, "a-output")
    for folder in (input_dir, output_dir):
        shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(input_dir)
    os.symlink(os.path.abspath(clip), os.path.join(input_dir, os.path.basename(clip)))
    wall, cpu = timed(mpicolor(ranks, "run", input_dir, output_dir))
    return {"wall": wall, "cpu": cpu, "frames": frames_computed(output_dir), "bytes_read": os.path.getsize(clip)}


def from_tarballs(clip, work, ranks):
    """Path (b): ``pack`` the clip, then ``run`` on the tarballs; each step timed on its own too."""
    tarballs, output_dir = os.path.join(work, "b-tarballs"), os.path.join(work, "b-output")
    for folder in (tarballs, output_dir):
        shutil.rmtree(folder, ignore_errors=True)
    pack_wall, pack_cpu = timed(mpicolor(ranks, "pack", clip, "--out", tarballs))
    tar_bytes = sum(os.path.getsize(os.path.join(tarballs, name)) for name in os.listdir(tarballs))
    run_wall, run_cpu = timed(mpicolor(ranks, "run", tarballs, output_dir))
    return {"wall": pack_wall + run_wall, "cpu": pack_cpu + run_cpu, "pack_wall": pack_wall, "run_wall": run_wall,
            "run_cpu": run_cpu, "frames": frames_computed(output_dir),
            "bytes_read": os.path.getsize(clip) + tar_bytes, "tar_bytes": tar_bytes}


def summarise(clip, a_runs, b_runs):
    """The medians of one clip's runs, and the ratios the targets are about."""
    frames = a_runs[0]["frames"]
    if any(run["frames"] != frames for run in a_runs + b_runs):
        raise RuntimeError(f"{clip}: the runs computed different frame counts")

    def med(runs, key):
        return statistics.median(run[key] for run in runs)

    row = {"clip": os.path.basename(clip), "frames": frames,
           "a_fps": frames / med(a_runs, "wall"), "b_fps": frames / med(b_runs, "wall"),
           "b_pack_s": med(b_runs, "pack_wall"), "b_run_fps": frames / med(b_runs, "run_wall"),
           "a_cpu_ms": 1000 * med(a_runs, "cpu") / frames, "b_cpu_ms": 1000 * med(b_runs, "cpu") / frames,
           "b_run_cpu_ms": 1000 * med(b_runs, "run_cpu") / frames,
           "a_bytes": a_runs[0]["bytes_read"], "b_bytes": b_runs[0]["bytes_read"],
           "a_walls": [run["wall"] for run in a_runs], "b_walls": [run["wall"] for run in b_runs],
           "b_run_walls": [run["run_wall"] for run in b_runs]}
    row["end_to_end_ratio"] = row["a_fps"] / row["b_fps"]
    row["vs_run_alone_ratio"] = row["a_fps"] / row["b_run_fps"]
    return row


def print_table(rows, ranks, repeat):
    print(f"\nmpiexec -n {ranks}, every frame, medians of {repeat} runs per path (order alternating); (a) run on the "
          "video, (b) pack then run on its tarballs\n")
    print("| clip | frames | (a) frames/s | (b) frames/s | (a) / (b) | (b) pack s | (b) run alone frames/s | "
          "(a) / (b) run alone | CPU ms/frame (a) / (b) / (b) run | MB read (a) / (b) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        print(f"| {row['clip']} | {row['frames']} | {row['a_fps']:.1f} | {row['b_fps']:.1f} | "
              f"{row['end_to_end_ratio']:.2f}x | {row['b_pack_s']:.1f} | {row['b_run_fps']:.1f} | "
              f"{row['vs_run_alone_ratio']:.2f}x | {row['a_cpu_ms']:.1f} / {row['b_cpu_ms']:.1f} / "
              f"{row['b_run_cpu_ms']:.1f} | {row['a_bytes'] / 1e6:.1f} / {row['b_bytes'] / 1e6:.1f} |")


def run_videos_bench(args):
    """``mpicolor bench videos``; returns the exit status."""
    clips = list(args.videos) or [path for path in DEFAULT_VIDEOS if os.path.exists(path)]
    if os.path.isdir(args.frames):
        clips = make_bench_clips(args.frames, args.clips) + clips
    else:
        print(f"mpicolor bench videos: no 1080p clips: {args.frames} is not a folder (pass --frames DIR)",
              file=sys.stderr)
    if not clips:
        print("mpicolor bench videos: no clip to run", file=sys.stderr)
        return 2
    rows = []
    for number, clip in enumerate(clips):
        work = os.path.join(args.out, os.path.basename(clip))
        os.makedirs(work, exist_ok=True)
        a_runs, b_runs = [], []
        for repeat in range(args.repeat):
            paths = [(from_video, a_runs), (from_tarballs, b_runs)]
            for path, runs in paths[::-1] if (number + repeat) % 2 else paths:
                runs.append(path(clip, work, args.ranks))
        rows.append(summarise(clip, a_runs, b_runs))
        print(f"{rows[-1]['clip']}: (a) walls {', '.join(f'{w:.2f}' for w in rows[-1]['a_walls'])} s; (b) walls "
              f"{', '.join(f'{w:.2f}' for w in rows[-1]['b_walls'])} s (run alone "
              f"{', '.join(f'{w:.2f}' for w in rows[-1]['b_run_walls'])} s)", flush=True)
    print_table(rows, args.ranks, args.repeat)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"ranks": args.ranks, "repeat": args.repeat, "rows": rows,
                       "when": time.strftime("%Y-%m-%d %H:%M")}, stream, indent=1)
    return 0
