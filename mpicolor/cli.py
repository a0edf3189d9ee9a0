"""The ``mpicolor`` command: argparse subcommands; ``main(argv)`` returns the exit status."""

import argparse
import contextlib
import importlib
import io
import os

from mpicolor import __version__
from mpicolor.job.launch import launcher_rank

RUN_EPILOG = """\
exit status: 0 all tarballs done; 1 a tarball could not be read at all or only in part (named in the log,
the others are complete); 2 a bad setting; 3 OUTPUT_DIR cannot be used (locked by another run, not
writable, results of other settings); 4 interrupted by SIGUSR1, SIGTERM or SIGINT after a final checkpoint (run
the same command again to resume); 5 a rank stopped answering and was given up on after --stall-timeout (the
others computed its frames: the outputs are complete); 70 a rank failed (the job was aborted; rerunning
resumes from the checkpoint).
"""


# subcommands whose module provides add_arguments(parser) and main(args)
TOOLS = {"pack": "decode videos into tarballs of JPEG frames",
         "inspect": "what an OUTPUT_DIR holds",
         "render": "the colour barcode of a run as PNG or SVG",
         "export": "all tarballs' colours as one CSV, JSON Lines or Parquet file"}


def add_placement_arguments(parser):
    """Flags that decide which rank computes where (``run`` and ``info`` share them)."""
    parser.add_argument("--split", default="14:4", metavar="C:G",
                        help="CPU:GPU split of the ranks: rank r is a GPU rank when r %% (C+G) < G (default 14:4)")
    parser.add_argument("--gpus", type=int, default=None, metavar="N",
                        help="GPUs per node (default: the devices the CUDA runtime sees)")


def build_parser():
    parser = argparse.ArgumentParser(prog="mpicolor", description=(
        "Dominant colours of every frame of a video collection, at cluster scale. "
        "Launch `run` with mpiexec for many ranks."))
    parser.add_argument("--version", action="version", version=f"mpicolor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="compute the palettes of all frames of all tarballs and videos in INPUT_DIR",
        description="Compute the dominant colours of every frame of every tarball and video in INPUT_DIR; write "
                    "OUTPUT_DIR/hist_{data set}_{label}.sqlite per data set and an HDF5 checkpoint. Rerunning the "
                    "same command resumes.", epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("input_dir", metavar="INPUT_DIR",
                     help="folder of data sets: tarballs of frames (.tar) and video files (.mp4, .mkv, .webm, .mov, "
                          ".avi, ...; needs the video extra, pip install 'mpicolor[video]')")
    run.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder of the outputs (created if missing)")
    run.add_argument("--label", default="db", help="the {label} of the output file names (default db)")
    run.add_argument("--clusters", type=int, default=5, help="colours per frame (default 5)")
    run.add_argument("--method", default="fast", choices=("fast", "seed"),
                     help="fast: histogram k-means (default); seed: the original's KMeans on all pixels")
    run.add_argument("--seed", type=int, default=0, help="random seed of every frame's k-means (default 0)")
    run.add_argument("--scale", type=int, default=None, choices=(1, 2, 4, 8),
                     help="JPEG decode scale (default: the method's own, see docs/palette.md)")
    run.add_argument("--max-pixels", type=int, default=50_000_000,
                     help="refuse frames larger than this many pixels (default 50 megapixels)")
    add_placement_arguments(run)
    run.add_argument("--fps", type=float, default=None,
                     help="videos: frames kept per second of video, as `mpicolor pack --fps` keeps them (default: "
                          "every frame)")
    run.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                     help="seconds between checkpoints; also at every tarball's end (default 60)")
    run.add_argument("--crop-borders", default="off", choices=("off", "auto"),
                     help="auto: leave each frame's dark letterbox/pillarbox bars out of its palette and record the "
                          "crop (default off, comparable with the original)")
    run.add_argument("--progress", default="auto", choices=("auto", "bar", "log"),
                     help="a live bar, or a log line every 10 s (default auto: the bar on a terminal; under mpiexec "
                          "a rank never sees one, so ask for bar)")
    run.add_argument("--stall-timeout", type=float, default=600.0, metavar="SECONDS",
                     help="give up on a rank that holds work this long without answering (a hung file system or "
                          "device): others compute its frames, and the job ends with status 5 (default 600)")
    run.add_argument("--node-size", type=int, default=None, metavar="N",
                     help="ranks per node for the node tier, every N consecutive ranks a node (default: the nodes MPI "
                          "reports; a run on one node, or with N at least the rank count, is flat)")
    run.add_argument("--simulate", type=float, default=None, metavar="SECONDS",
                     help="benchmarks: each frame costs this much sleep instead of its palette")

    info = commands.add_parser("info", help="where each rank computes; MPI library; GPUs; run under mpiexec")
    add_placement_arguments(info)
    from mpicolor.tools.info import add_arguments as add_info_arguments
    add_info_arguments(info)

    for name, help_text in TOOLS.items():
        module = importlib.import_module(f"mpicolor.tools.{name}")
        module.add_arguments(commands.add_parser(name, help=help_text, description=module.__doc__.splitlines()[0]))

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    kernel = benches.add_parser("kernel", help="per-frame decode and palette time and quality, one core")
    from mpicolor.bench.kernel import add_kernel_arguments
    add_kernel_arguments(kernel)
    whole = benches.add_parser("run", help="whole runs under mpiexec: 1 rank vs 2, and a rank at half speed")
    from mpicolor.bench.run import add_run_arguments
    add_run_arguments(whole)
    scaling = benches.add_parser("scaling", help="strong or weak scaling over rank counts, real or simulated")
    from mpicolor.bench.scaling import add_scaling_arguments
    add_scaling_arguments(scaling)
    coordinator = benches.add_parser("coordinator", help="rank 0's real code at 10 to 1,000 nodes of 160 ranks, the "
                                                         "nodes simulated on a virtual clock")
    from mpicolor.bench.coordinator import add_coordinator_arguments
    add_coordinator_arguments(coordinator)
    state = benches.add_parser("state", help="the run's state as the collection grows: 25 and 250 tarballs of "
                                             "44,470 tiny frames, simulated")
    from mpicolor.bench.state import add_state_arguments
    add_state_arguments(state)
    on_videos = benches.add_parser("videos", help="run on videos against pack then run on the tarballs, side by side "
                                                  "under mpiexec: frames/s end to end, bytes read, CPU per frame")
    from mpicolor.bench.video_runs import add_videos_arguments
    add_videos_arguments(on_videos)
    tools = benches.add_parser("tools", help="inspect, render and export on a synthetic 11.1-million-frame collection: "
                                             "time, rows/s, peak memory")
    from mpicolor.bench.tools import add_tools_arguments
    add_tools_arguments(tools)
    return parser


def run_config(args):
    """The validated :class:`~mpicolor.job.config.RunConfig` of ``mpicolor run``'s arguments; ValueError for a
    bad setting."""
    from mpicolor.engine.gpu import memory_limit
    from mpicolor.engine.palette import default_scale
    from mpicolor.job.config import RunConfig
    from mpicolor.job.placement import parse_split

    return RunConfig(
        input_dir=os.path.abspath(args.input_dir), output_dir=os.path.abspath(args.output_dir), label=args.label,
        clusters=args.clusters, method=args.method, seed=args.seed,
        scale=args.scale if args.scale is not None else default_scale(args.method), max_pixels=args.max_pixels,
        split=parse_split(args.split), gpus=args.gpus, checkpoint_every=args.checkpoint_every,
        simulate=args.simulate, progress=args.progress, crop_borders=args.crop_borders == "auto",
        stall_timeout=args.stall_timeout, node_size=args.node_size, gpu_memory=memory_limit(), fps=args.fps)


def main(argv=None):
    parser = build_parser()
    if not launcher_rank():
        args = parser.parse_args(argv)
    else:
        # every rank parses the same arguments: only rank 0 prints usage errors
        with contextlib.redirect_stderr(io.StringIO()):
            args = parser.parse_args(argv)
    if args.command == "run":
        from mpicolor.job.mpi import run_job

        return run_job(lambda: run_config(args))
    if args.command in TOOLS:
        return importlib.import_module(f"mpicolor.tools.{args.command}").main(args)
    if args.command == "info":
        from mpicolor.job.placement import parse_split
        from mpicolor.tools.info import main as info_main

        return info_main(args, parse_split(args.split))
    if args.command == "bench" and args.bench == "kernel":
        from mpicolor.bench.kernel import run_kernel_bench

        return run_kernel_bench(args)
    if args.command == "bench" and args.bench == "run":
        from mpicolor.bench.run import run_run_bench

        return run_run_bench(args)
    if args.command == "bench" and args.bench == "scaling":
        from mpicolor.bench.scaling import run_scaling_bench

        return run_scaling_bench(args)
    if args.command == "bench" and args.bench == "coordinator":
        from mpicolor.bench.coordinator import run_coordinator_bench

        return run_coordinator_bench(args)
    if args.command == "bench" and args.bench == "videos":
        from mpicolor.bench.video_runs import run_videos_bench

        return run_videos_bench(args)
    if args.command == "bench" and args.bench == "state":
        from mpicolor.bench.state import run_state_bench

        return run_state_bench(args)
    if args.command == "bench" and args.bench == "tools":
        from mpicolor.bench.tools import run_tools_bench

        return run_tools_bench(args)
    parser.error(f"unknown command {args.command!r}")
