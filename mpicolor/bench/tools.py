"""``mpicolor bench tools``: time, rows/s and peak memory of ``inspect``, ``render`` and ``export`` at scale.

It makes a synthetic collection (by default 20 tarballs of 555,875 tiny frames: the original's 11,117,500
frames; the tarballs are hard links to one file, :func:`mpicolor.bench.state.tiny_tarball`), runs it once
with ``--simulate 0`` under ``mpiexec`` (both are kept in ``--out`` and reused by later runs), then runs
every tool by itself, in a process of its own, and reports the median wall time, processor time and the peak resident memory of that process (``wait4``'s
``ru_utime``, ``ru_stime`` and ``ru_maxrss``).
The rows that the exports wrote are counted and checked against the frames in the results.
"""

import json
import os
import subprocess
import sys
import time

from mpicolor.bench.state import linked_collection, tiny_tarball
from mpicolor.bench.run import median, timed_run
from mpicolor.state.output_dir import RUN_SUMMARY

DEFAULT_OUT = os.path.join("bench-out", "tools")
# 20 x 555,875 = 11,117,500: the original program's collection
DEFAULT_TARBALLS, DEFAULT_MEMBERS = 20, 555_875


def add_tools_arguments(parser):
    """The flags of ``mpicolor bench tools``."""
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"work folder: input/, output/ and the tools' files (default {DEFAULT_OUT})")
    parser.add_argument("--tarballs", type=int, default=DEFAULT_TARBALLS,
                        help=f"tarballs in the collection (default {DEFAULT_TARBALLS})")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS,
                        help=f"frames per tarball (default {DEFAULT_MEMBERS:,})")
    parser.add_argument("--ranks", type=int, default=4, help="ranks of the run that makes the results (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; medians are reported (default 3)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated, of: {', '.join(TOOLS)} (default: all)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the numbers to FILE")


# the tools timed, each with the file it writes (None: standard output, thrown away) and the format of its rows
TOOLS = {
    "inspect": (["inspect"], None, None),
    "inspect-json": (["inspect", "--json"], None, None),
    "render": (["render", "--width", "2000", "--out", "{out}/barcode.png"], None, None),
    "render-average": (["render", "--width", "2000", "--mode", "average", "--out", "{out}/average.png"], None, None),
    "export-csv": (["export", "--format", "csv", "--out", "{out}/frames.csv"], "frames.csv", "csv"),
    "export-json": (["export", "--format", "json", "--out", "{out}/frames.jsonl"], "frames.jsonl", "json"),
    "export-parquet": (["export", "--format", "parquet", "--out", "{out}/frames.parquet"], "frames.parquet",
                       "parquet"),
}
# what the tools must reach on the original's collection (issue 13)
PEAK_LIMIT_MIB = 1536
RATE_TARGETS = {"export-csv": 300_000, "export-parquet": 1_000_000}


def run_tools_bench(args):
    """Make the collection and its results if needed, time every tool, print the table.

    Returns
    -------
    int
        0 when every tool succeeded and wrote the rows expected; 1 otherwise; 2 for a bad option.
    """
    tools = [name.strip() for name in args.tools.split(",") if name.strip()]
    problems = [f"tool {name!r} should be one of {', '.join(TOOLS)}" for name in tools if name not in TOOLS]
    problems += [f"--{flag} {value} should be >= 1" for flag, value in
                 (("tarballs", args.tarballs), ("members", args.members), ("ranks", args.ranks),
                  ("repeat", args.repeat)) if value < 1]
    if problems:
        print("mpicolor bench tools: " + "; ".join(problems), file=sys.stderr)
        return 2
    output_dir = os.path.join(args.out, f"output-{args.tarballs}x{args.members}")
    files = os.path.join(args.out, "files")
    os.makedirs(files, exist_ok=True)
    frames = args.tarballs * args.members
    print(f"collection: {args.tarballs} tarballs of {args.members:,} frames = {frames:,} frames", flush=True)
    collection = os.path.join(args.out, f"input-{args.tarballs}x{args.members}")
    if not os.path.isdir(collection):
        linked_collection(tiny_tarball(args.out, args.members), collection, args.tarballs)
    if not os.path.exists(os.path.join(output_dir, RUN_SUMMARY)):
        print(f"running it once with {args.ranks} ranks, --simulate 0 ...", flush=True)
        try:
            timed_run(collection, output_dir, args.ranks, options=("--simulate", "0", "--split", "1:0"))
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1
    load = os.getloadavg()[0]
    rows, failures = [], 0
    for name in tools:
        arguments, written, row_format = TOOLS[name]
        command = [sys.executable, "-m", "mpicolor", arguments[0], output_dir,
                   *[argument.format(out=files) for argument in arguments[1:]]]
        runs = [_timed(command) for _ in range(args.repeat)]
        failed = [run for run in runs if run["status"] != 0]
        counted = _count_rows(os.path.join(files, written), row_format) if written and not failed else None
        row = {"tool": name, "command": " ".join(["mpicolor", *arguments]).replace("{out}/", ""),
               "wall_s": median([run["wall"] for run in runs]), "cpu_s": median([run["cpu"] for run in runs]),
               "peak_mib": median([run["peak_mib"] for run in runs]),
               "peak_mib_max": max(run["peak_mib"] for run in runs), "rows": counted,
               "rows_ok": None if counted is None else counted == frames, "status": [run["status"] for run in runs]}
        row["rows_per_s"] = counted / row["wall_s"] if counted else None
        if failed:
            print(f"{name} failed with status {failed[0]['status']}:\n{failed[0]['stderr']}", file=sys.stderr)
        failures += bool(failed) or row["rows_ok"] is False
        rows.append(row)
        print(f"  {name}: {row['wall_s']:.1f} s, peak {row['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
    print_tools_table(rows, frames, args.repeat, load, os.getloadavg()[0])
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"frames": frames, "tarballs": args.tarballs, "repeat": args.repeat, "load_before": load,
                       "tools": rows, "when": time.strftime("%Y-%m-%d %H:%M")}, stream, indent=1)
    return 1 if failures else 0


def _timed(command):
    """Run ``command`` alone; its wall time, and the peak resident memory of its process (``wait4``)."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024,
            "status": process.returncode, "stderr": stderr.decode(errors="replace")[-3000:]}


def _count_rows(path, row_format):
    """Frames in an export: Parquet's row count, or lines of CSV (less the header) and JSON Lines.

    Counting lines is exact here: the collection's member names hold no line breaks.
    """
    if row_format == "parquet":
        import pyarrow.parquet

        return pyarrow.parquet.read_metadata(path).num_rows
    lines = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 24):
            lines += chunk.count(b"\n")
    return lines - (row_format == "csv")


def print_tools_table(rows, frames, repeat, load_before, load_after):
    """The benchmark's table and the targets (set for the original's 11,117,500 frames)."""
    print(f"\n{frames:,} frames; each tool alone in its own process, {repeat} runs, medians "
          f"(load average {load_before:.1f} before, {load_after:.1f} after)")
    print(f"{'command':64s} {'wall s':>7s} {'rows/s':>10s} {'CPU s':>6s} {'peak MiB':>9s} {'rows':>11s}")
    for row in rows:
        rate = f"{row['rows_per_s']:,.0f}" if row["rows_per_s"] else "-"
        counted = "-" if row["rows"] is None else f"{row['rows']:,}" + ("" if row["rows_ok"] else " (!)")
        print(f"{row['command']:64s} {row['wall_s']:7.1f} {rate:>10s} {row['cpu_s']:6.1f} {row['peak_mib']:9.0f} "
              f"{counted:>11s}")
    print("CPU s: the process's user + system time, which other work on a shared machine inflates far less than "
          "wall time; wall can be below it where reading overlaps writing")
    peak = max(row["peak_mib_max"] for row in rows)
    verdicts = [f"peak memory of every tool <= {PEAK_LIMIT_MIB} MiB: {'yes' if peak <= PEAK_LIMIT_MIB else 'NO'} "
                f"(highest {peak:.0f} MiB)"]
    for row in rows:
        if row["tool"] in RATE_TARGETS and row["rows_per_s"]:
            target = RATE_TARGETS[row["tool"]]
            verdicts.append(f"{row['tool']} >= {target:,} rows/s: {'yes' if row['rows_per_s'] >= target else 'NO'}")
    verdicts.append("rows checked against the frames: " + (
        "yes" if all(row["rows_ok"] is not False for row in rows) else "NO"))
    scale = "" if frames == DEFAULT_TARBALLS * DEFAULT_MEMBERS else (
        f" (set for {DEFAULT_TARBALLS * DEFAULT_MEMBERS:,} frames, not these {frames:,})")
    print(f"targets{scale}: " + "; ".join(verdicts))
