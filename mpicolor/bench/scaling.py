"""``mpicolor bench scaling``: strong and weak scaling of whole runs, real or simulated frames.

Every point is a real ``mpiexec ... mpicolor run`` (`mpicolor.bench.run.timed_run`); the table, a CSV, a
JSON file and, with matplotlib, a plot of speedup and efficiency go to ``--out``.
"""

import json
import os
import shutil
import statistics
import sys

from mpicolor.bench.run import median, timed_run
from mpicolor.state.tarballs import find_tarballs


def add_scaling_arguments(parser):
    parser.add_argument("input_dir", metavar="INPUT_DIR", help="data sets to run on (strong scaling: as they are)")
    parser.add_argument("--ranks", default="1,2", help="rank counts, comma-separated (default 1,2)")
    parser.add_argument("--simulate", default=None, metavar="SECONDS[,SECONDS...]",
                        help="per-frame cost(s) of simulated runs (sleep instead of the palette); the first is the "
                             "baseline of the overhead column, so give 0 first to measure coordination alone")
    parser.add_argument("--copies", type=int, default=1,
                        help="run on this many copies of INPUT_DIR's tarballs (symbolic links; default 1)")
    parser.add_argument("--weak", action="store_true",
                        help="weak scaling: N ranks get N times --copies copies of INPUT_DIR's tarballs")
    parser.add_argument("--out", default="bench-out/scaling", help="folder of the runs, table and plot")
    parser.add_argument("--repeat", type=int, default=1, help="runs per point; the median wall is kept")
    parser.add_argument("--nodes", type=int, default=None, metavar="N",
                        help="the node tier: each rank count runs as N nodes (--node-size RANKS/N) and flat "
                             "(--node-size RANKS) side by side, alternating; needs --simulate (one cost)")


def copied_input(input_dir, copies, folder):
    """``copies`` copies of INPUT_DIR's tarballs as symbolic links (more data without more disk)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for copy in range(copies):
        for path in find_tarballs(input_dir)[0]:
            os.symlink(os.path.abspath(path), os.path.join(folder, f"copy{copy:03d}-{os.path.basename(path)}"))
    return folder


def scaling_row(ranks, cost, summary):
    """One line of the scaling table from a run's summary."""
    per_rank = [rank["frames"] / rank["busy"] if rank["busy"] > 0 else 0.0 for rank in summary["ranks"].values()]
    idle = [summary["wall"] - rank["busy"] for rank in summary["ranks"].values()]
    return {"ranks": ranks, "cost_s": cost, "frames": summary["frames"], "wall_s": summary["wall"],
            "frames_per_s": summary["frames"] / summary["wall"], "rank_frames_per_s_median": median(per_rank),
            "idle_s_mean": sum(idle) / len(idle), "computing_ranks": len(summary["ranks"]),
            "rank0_frames_per_cpu_s": summary.get("coordinator_frames_per_cpu_s")}


def run_scaling_bench(args):
    if args.nodes:
        return run_nodes_bench(args)
    ranks_list = [int(text) for text in args.ranks.split(",")]
    costs = [float(text) for text in args.simulate.split(",")] if args.simulate else [None]
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for cost in costs:
        options = ["--checkpoint-every", "60"] + (["--simulate", str(cost)] if cost is not None else [])
        for ranks in ranks_list:
            copies = args.copies * (ranks if args.weak else 1)
            input_dir = (copied_input(args.input_dir, copies, os.path.join(args.out, f"input-{copies}"))
                         if copies > 1 else args.input_dir)
            summaries = [timed_run(input_dir, os.path.join(args.out, f"run-{ranks}"), ranks, options=options)
                         for _ in range(args.repeat)]
            walls = [summary["wall"] for summary in summaries]
            row = scaling_row(ranks, cost, summaries[walls.index(statistics.median_high(walls))])
            rows.append(row)
            print(f"  ran {ranks} ranks{'' if cost is None else f' at {cost * 1000:g} ms/frame'}: "
                  f"{row['frames']} frames in {row['wall_s']:.2f} s", file=sys.stderr, flush=True)
    add_derived_columns(rows, args.weak)
    print_scaling_table(rows, args.weak)
    write_scaling_files(rows, args.out, args.weak)
    return 0


def nodes_row(ranks, nodes, cost, summary):
    """One line of the node-tier table: the work's wall (first chunk handed out to last result) against ideal,
    ``frames x cost / (ranks - 1)`` (rank 0 computes nothing past 16 ranks; node coordinators count as computing
    ranks), and the processor shares of rank 0 and of the node coordinators over that wall."""
    work = summary["work_wall"]
    ideal = summary["frames"] * cost / (ranks - 1)
    node_cpu = list(summary["node_coordinators_cpu_s"].values())
    return {"ranks": ranks, "nodes": nodes, "cost_s": cost, "frames": summary["frames"], "work_wall_s": work,
            "ideal_s": ideal, "wall_over_ideal": work / ideal,
            "rank0_cpu_share": summary["work_coordinator_cpu_s"] / work,
            "node_coordinator_cpu_share": (sum(node_cpu) / len(node_cpu) / work) if node_cpu else None}


def run_nodes_bench(args):
    """Each rank count as ``--nodes`` nodes and flat, alternating which goes first; the median of each kept."""
    costs = [float(text) for text in (args.simulate or "").split(",") if text]
    if len(costs) != 1 or costs[0] <= 0:
        raise SystemExit(f"mpicolor bench scaling --nodes: --simulate must give one cost above 0 s, "
                         f"got {args.simulate!r}")
    cost = costs[0]
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for ranks in (int(text) for text in args.ranks.split(",")):
        if ranks % args.nodes:
            raise SystemExit(f"mpicolor bench scaling: --nodes {args.nodes} must divide the rank count {ranks}")
        layouts = {args.nodes: ranks // args.nodes, 1: ranks}  # nodes -> --node-size
        summaries = {nodes: [] for nodes in layouts}
        for repeat in range(args.repeat):
            for nodes in (list(layouts) if repeat % 2 == 0 else list(layouts)[::-1]):
                options = ["--checkpoint-every", "60", "--simulate", str(cost), "--split", "1:0",
                           "--node-size", str(layouts[nodes])]
                summary = timed_run(args.input_dir, os.path.join(args.out, f"run-{ranks}-{nodes}"), ranks,
                                    options=options)
                summaries[nodes].append(summary)
                print(f"  ran {ranks} ranks as {nodes} node{'s' * (nodes > 1)}: {summary['frames']} frames, "
                      f"work {summary['work_wall']:.2f} s", file=sys.stderr, flush=True)
        for nodes, runs in summaries.items():
            walls = [run["work_wall"] for run in runs]
            rows.append(nodes_row(ranks, nodes, cost, runs[walls.index(statistics.median_high(walls))]))
    print(f"\nnode tier: {cost * 1000:g} ms/frame simulated, median of {args.repeat} run(s) per layout")
    print(f"{'ranks':>5s} {'nodes':>5s} {'frames':>7s} {'work s':>7s} {'ideal s':>7s} {'wall/ideal':>10s} "
          f"{'rank 0 CPU':>10s} {'node coord. CPU':>15s}")
    for row in rows:
        share = row["node_coordinator_cpu_share"]
        print(f"{row['ranks']:5d} {row['nodes']:5d} {row['frames']:7d} {row['work_wall_s']:7.2f} "
              f"{row['ideal_s']:7.2f} {row['wall_over_ideal']:10.3f} {row['rank0_cpu_share']:10.1%} "
              f"{'-' if share is None else format(share, '.1%'):>15s}")
    with open(os.path.join(args.out, "nodes.json"), "w") as stream:
        json.dump({"rows": rows}, stream, indent=1)
    return 0


def add_derived_columns(rows, weak):
    """Speedup and efficiency against the fewest ranks at the same cost; overhead against the first cost."""
    baselines = {}
    for row in rows:
        base = baselines.setdefault(row["cost_s"], row)
        scale = row["ranks"] / base["ranks"]
        if weak:
            row["speedup"] = row["frames_per_s"] / base["frames_per_s"]
        else:
            row["speedup"] = base["wall_s"] / row["wall_s"]
        row["efficiency"] = row["speedup"] / scale
    first_cost = rows[0]["cost_s"]
    for row in rows:
        if row["cost_s"] is not None and first_cost is not None and row["cost_s"] > first_cost:
            zero = next(r for r in rows if r["cost_s"] == first_cost and r["ranks"] == row["ranks"])
            ideal = row["frames"] * (row["cost_s"] - first_cost) / row["ranks"]
            row["overhead_vs_ideal"] = (row["wall_s"] - zero["wall_s"]) / ideal


def print_scaling_table(rows, weak):
    print(f"\n{'weak' if weak else 'strong'} scaling")
    print(f"{'ranks':>5s} {'ms/frame':>8s} {'frames':>7s} {'wall s':>8s} {'frames/s':>9s} {'speedup':>7s} "
          f"{'effic.':>6s} {'rank f/s':>8s} {'idle s':>7s} {'(wall-wall0)/ideal':>18s} {'rank 0 f/cpu-s':>14s}")
    for row in rows:
        cost = "real" if row["cost_s"] is None else f"{row['cost_s'] * 1000:g}"
        overhead = f"{row['overhead_vs_ideal']:.3f}" if "overhead_vs_ideal" in row else "-"
        capacity = f"{row['rank0_frames_per_cpu_s']:.0f}" if row["rank0_frames_per_cpu_s"] else "-"
        print(f"{row['ranks']:5d} {cost:>8s} {row['frames']:7d} {row['wall_s']:8.2f} {row['frames_per_s']:9.1f} "
              f"{row['speedup']:7.2f} {row['efficiency']:6.2f} {row['rank_frames_per_s_median']:8.1f} "
              f"{row['idle_s_mean']:7.2f} {overhead:>18s} {capacity:>14s}")


def write_scaling_files(rows, out, weak):
    """scaling.csv, scaling.json and, with matplotlib installed, scaling.png."""
    columns = list(rows[0]) + [key for key in rows[-1] if key not in rows[0]]
    with open(os.path.join(out, "scaling.csv"), "w") as stream:
        stream.write(",".join(columns) + "\n")
        for row in rows:
            stream.write(",".join("" if row.get(key) is None else str(row.get(key)) for key in columns) + "\n")
    with open(os.path.join(out, "scaling.json"), "w") as stream:
        json.dump({"weak": weak, "rows": rows}, stream, indent=1)
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is not installed (pip install 'mpicolor[plot]')", file=sys.stderr)
        return
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4))
    for cost in dict.fromkeys(row["cost_s"] for row in rows):
        series = [row for row in rows if row["cost_s"] == cost]
        label = "real frames" if cost is None else f"{cost * 1000:g} ms/frame (simulated)"
        ranks = [row["ranks"] for row in series]
        left.plot(ranks, [row["speedup"] for row in series], "o-", label=label)
        right.plot(ranks, [row["efficiency"] for row in series], "o-", label=label)
    every = sorted({row["ranks"] for row in rows})
    left.plot(every, [r / every[0] for r in every], "k--", label="ideal")
    right.axhline(1.0, color="k", linestyle="--", label="ideal")
    for axis, name in ((left, "speedup"), (right, "parallel efficiency")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("ranks")
        axis.set_ylabel(name)
        axis.grid(True, alpha=0.3)
    left.set_yscale("log", base=2)
    right.set_ylim(0, 1.2)
    right.legend(fontsize=8)
    figure.suptitle(f"mpicolor {'weak' if weak else 'strong'} scaling")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "scaling.png"), dpi=100)
