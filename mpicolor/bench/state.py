"""``mpicolor bench state``: what the run's state costs as the collection grows (issue 10's measure).

It builds a synthetic collection, N tarballs of M tiny frames (hard links to one tarball, so that 11 million
frames cost 68 MB of disk), runs ``mpiexec -n R mpicolor run IN OUT --simulate 0 --split 1:0`` on 25 and on
250 of them side by side, and prints per run the frames/s, the bytes the job wrote (every rank: workers write
the sqlite files) against what OUTPUT_DIR holds at the end, the checkpoint saves' durations at the start and
at the end of the run, and rank 0's peak memory; then the ratios of the largest collection to the smallest.
"""

import io
import json
import os
import shutil
import statistics
import sys
import tarfile
import time

import cv2
import numpy as np

from mpicolor.bench.run import median, timed_run
from mpicolor.state.atomic import temporary_path

DEFAULT_TARBALLS = (25, 250)
DEFAULT_MEMBERS = 44_470  # 250 tarballs of 44,470 frames: the original's 11,117,500 frames


def add_state_arguments(parser):
    """Add the options of ``mpicolor bench state`` to ``parser``."""
    parser.add_argument("--tarballs", nargs="+", type=int, default=list(DEFAULT_TARBALLS), metavar="N",
                        help="collection sizes in tarballs, one run each (default: 25 250)")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS, metavar="M",
                        help=f"tiny frames per tarball (default {DEFAULT_MEMBERS})")
    parser.add_argument("--ranks", type=int, default=4, help="ranks of each run (default 4)")
    parser.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                        help="the runs' checkpoint interval (default 60, as `mpicolor run`)")
    parser.add_argument("--out", default="bench-out/state", help="work folder (default bench-out/state)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the numbers to FILE")


def tiny_frames(count):
    """``count`` tiny frames, distinct in their bytes: a 1x1 JPEG with the frame's number in a comment segment.

    Valid headers pass the check every frame gets before it is read, and distinct bytes give distinct stand-in
    palettes under ``--simulate``.
    """
    _, jpeg = cv2.imencode(".jpg", np.zeros((1, 1, 3), np.uint8))
    jpeg = jpeg.tobytes()
    for number in range(count):
        comment = b"frame %07d" % number
        yield jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def tiny_tarball(folder, members):
    """The tarball of ``members`` tiny frames (:func:`tiny_frames`) in ``folder``, written once (atomically, so
    that an interrupted benchmark never leaves half of one) and hard-linked for every tarball of a collection.

    Returns
    -------
    str
        Its path, ``{folder}/tiny-{members}.tar``.
    """
    path = os.path.join(folder, f"tiny-{members}.tar")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        temporary = temporary_path(path)
        with tarfile.open(temporary, "w", format=tarfile.USTAR_FORMAT) as tar:
            for number, data in enumerate(tiny_frames(members)):
                info = tarfile.TarInfo(f"frames/{number:07d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        os.replace(temporary, path)
    return path


def linked_collection(source, folder, tarballs):
    """INPUT_DIR of ``tarballs`` hard links to ``source``, made anew."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for number in range(tarballs):
        os.link(source, os.path.join(folder, f"set{number:04d}.tar"))
    return folder


def folder_bytes(folder):
    """Bytes of every file below ``folder``."""
    return sum(os.path.getsize(os.path.join(parent, name)) for parent, _, names in os.walk(folder) for name in names)


def state_row(tarballs, members, summary, output_bytes):
    """One line of the table from a run's summary."""
    saves = summary["checkpoint_saves"]
    rank0 = summary["rank0"]
    return {"tarballs": tarballs, "frames": tarballs * members, "wall_s": summary["wall"],
            "frames_per_s": summary["frames"] / summary["wall"], "written_bytes": summary["job_write_bytes"],
            "rank0_written_bytes": rank0["write_bytes"], "output_bytes": output_bytes,
            "written_vs_output": summary["job_write_bytes"] / output_bytes,
            "saves": saves["count"], "save_start_median_s": median(saves["first"]),
            "save_start_max_s": max(saves["first"]), "save_end_median_s": median(saves["last"]),
            "save_end_max_s": max(saves["last"]), "rank0_peak_bytes": rank0["peak_rss_bytes"]}


def run_state_bench(args):
    """Run the benchmark described by parsed ``args`` and print its table; returns the exit status."""
    source = tiny_tarball(args.out, args.members)
    rows = []
    # the smaller collections again after the largest, so that a machine's load drifting over the long run
    # weighs on both sides of the comparison
    for tarballs in args.tarballs + args.tarballs[-2::-1]:
        input_dir = linked_collection(source, os.path.join(args.out, f"in-{tarballs}"), tarballs)
        output_dir = os.path.join(args.out, f"out-{tarballs}")
        print(f"  running {tarballs} tarballs of {args.members} frames on {args.ranks} ranks", file=sys.stderr,
              flush=True)
        summary = timed_run(input_dir, output_dir, args.ranks, options=[
            "--simulate", "0", "--split", "1:0", "--checkpoint-every", str(args.checkpoint_every)])
        rows.append(state_row(tarballs, args.members, summary, folder_bytes(output_dir)))
        shutil.rmtree(input_dir)
    print_state_table(rows)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"rows": rows, "ranks": args.ranks, "when": time.strftime("%Y-%m-%d %H:%M")}, stream, indent=1)
    return 0


def print_state_table(rows):
    mib = 1 << 20
    print(f"\n{'tarballs':>8s} {'frames':>10s} {'wall s':>7s} {'frames/s':>9s} {'written MiB':>11s} "
          f"{'output MiB':>10s} {'written/out':>11s} {'saves':>5s} {'save ms, start med/max':>22s} "
          f"{'save ms, end med/max':>20s} {'rank 0 peak MiB':>15s}")
    for row in rows:
        print(f"{row['tarballs']:8d} {row['frames']:10d} {row['wall_s']:7.1f} {row['frames_per_s']:9.0f} "
              f"{row['written_bytes'] / mib:11.0f} {row['output_bytes'] / mib:10.0f} {row['written_vs_output']:11.2f} "
              f"{row['saves']:5d} {1000 * row['save_start_median_s']:10.1f} / {1000 * row['save_start_max_s']:8.1f} "
              f"{1000 * row['save_end_median_s']:8.1f} / {1000 * row['save_end_max_s']:8.1f} "
              f"{row['rank0_peak_bytes'] / mib:15.0f}")
    large = max(rows, key=lambda row: row["tarballs"])
    smallest = min(row["tarballs"] for row in rows)
    if smallest < large["tarballs"]:
        small = {key: statistics.mean(row[key] for row in rows if row["tarballs"] == smallest)
                 for key in ("frames_per_s", "rank0_peak_bytes")}
        print(f"\n{large['tarballs']} against {smallest} tarballs (target; {smallest} tarballs: the mean of the runs "
              "before and after):")
        print(f"  frames/s                          {large['frames_per_s'] / small['frames_per_s']:6.2f}x   (>= 0.9x)")
        print(f"  bytes written / OUTPUT_DIR        {large['written_vs_output']:6.2f}    (<= 3)")
        print(f"  save at the end / at the start    "
              f"{large['save_end_median_s'] / large['save_start_median_s']:6.2f}x   (<= 2x, medians of "
              f"{large['tarballs']} tarballs' run)")
        print(f"  rank 0 peak memory                {large['rank0_peak_bytes'] / small['rank0_peak_bytes']:6.2f}x   "
              "(<= 1.2x)")
