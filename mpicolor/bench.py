"""`mpicolor bench kernel`: per-frame time and quality of the palette methods on real frames."""

import json
import os
import sys
import time

import cv2
import numpy as np
import simplejpeg
from threadpoolctl import threadpool_limits

from mpicolor import kernels
from mpicolor.decode import SCALES, decode_frame
from mpicolor.gpu import Backend, GpuUnavailable
from mpicolor.palette import METHODS, extract_palette, sorted_palette

DEFAULT_FRAMES = os.path.join("..", "shared", "data", "frames", "hd")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BACKENDS = ("cpu", "gpu", "numpy")


def add_kernel_arguments(parser):
    """Add the options of ``mpicolor bench kernel`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("--frames", nargs="+", metavar="DIR", default=[DEFAULT_FRAMES],
                        help=f"folders of frames, one table each (default: {DEFAULT_FRAMES})")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--scale", nargs="+", type=int, default=[1, 2, 4], metavar="N",
                        help="decode scales of the fast method, one row each (default: 1 2 4)")
    parser.add_argument("--methods", default="fast,seed",
                        help="comma-separated methods (default: fast,seed)")
    parser.add_argument("--repeat", type=int, default=5, metavar="R",
                        help="timed runs per frame of fast and of the decoders; seed runs once "
                             "(default: 5)")
    parser.add_argument("--backend", choices=BACKENDS, default="cpu",
                        help="cpu: the numba kernels and scikit-learn; gpu: the CuPy kernels and cuML on "
                             "the current device; numpy: the GPU code run by NumPy on the CPU (default: cpu)")


def run_kernel_bench(args):
    """Run the kernel benchmark described by parsed ``args`` and print its tables.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser given `add_kernel_arguments`.

    Returns
    -------
    int
        Exit code: 0, or 2 for a bad option or a missing frames folder.
    """
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    problems = [f"method {name!r} should be one of {', '.join(METHODS)}"
                for name in methods if name not in METHODS]
    problems += [f"--scale {scale} should be one of {SCALES}" for scale in args.scale if scale not in SCALES]
    if args.repeat < 1:
        problems.append(f"--repeat {args.repeat} should be >= 1")
    problems += [f"frames folder {folder!r} not found (from {os.getcwd()}); pass --frames DIR"
                 for folder in args.frames if not os.path.isdir(folder)]
    if problems:
        print("mpicolor bench kernel: " + "; ".join(problems), file=sys.stderr)
        return 2
    variants = [("seed", 1)] if "seed" in methods else []
    variants += [("fast", scale) for scale in args.scale] if "fast" in methods else []
    try:
        backends = {} if args.backend == "cpu" else {
            method: Backend(method=method, xp=np if args.backend == "numpy" else None) for method in methods}
    except GpuUnavailable as error:
        print(f"mpicolor bench kernel: --backend {args.backend}: {error}", file=sys.stderr)
        return 2
    compile_seconds = kernels.warm_up()
    print(f"numba kernels, first call (compile or cache load): {compile_seconds:.2f} s")
    report = {"numba_first_call_s": compile_seconds, "backend": args.backend, "repeat": args.repeat,
              "folders": {}}
    palette_of = _palette_function(backends)
    if backends:
        tiny = np.arange(192, dtype=np.uint8).reshape(8, 8, 3)
        report["array_first_call_s"] = _timed(palette_of, tiny, "fast")[1] / 1e3
        print(f"array kernels ({args.backend}), first call: {report['array_first_call_s']:.2f} s")
    with threadpool_limits(1):
        for folder in args.frames:
            frames = _bench_folder(folder, variants, args.repeat, palette_of)
            summary = _summarise(frames, variants)
            _print_folder(folder, frames, summary, variants)
            if "fast" in backends:
                summary["batched_fast_ms_per_frame"] = _batched(folder, backends["fast"], args.repeat)
                print(f"fast@scale1, all {summary['frames']} frames in one call: "
                      f"{summary['batched_fast_ms_per_frame']:.2f} ms per frame (palette only)")
            report["folders"][folder] = {"frames": frames, "summary": summary}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=1)
        print(f"wrote {args.json}")
    return 0


def _palette_function(backends):
    """``palette_of(image, method)``: the CPU kernels without ``backends``, else the GPU backend by method."""
    if not backends:
        return lambda image, method: extract_palette(image, method=method)
    return lambda image, method: sorted_palette(*backends[method].colours([image], 5, 0)[0], 5)


def _batched(folder, backend, repeat):
    # the GPU path's real use: one call for many frames
    images = [decode_frame(frame_bytes) for _, frame_bytes in _frames(folder)]
    runs = [_timed(backend.colours, images, 5, 0)[1] for _ in range(repeat)]
    return float(np.median(runs)) / len(images)


def _frames(folder):
    for name in sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_SUFFIXES)):
        with open(os.path.join(folder, name), "rb") as stream:
            yield name, stream.read()


def _label(method, scale):
    return method if method == "seed" else f"{method}@scale{scale}"


def _timed(function, *arguments, **keywords):
    start = time.perf_counter()
    result = function(*arguments, **keywords)
    return result, (time.perf_counter() - start) * 1e3


def _bench_folder(folder, variants, repeat, palette_of):
    frames = []
    for name, frame_bytes in _frames(folder):
        pixels = decode_frame(frame_bytes).reshape(-1, 3)
        record = {"frame": name, "pixels": len(pixels), "variants": {}}
        timings = {"simplejpeg_ms": [], "opencv_ms": []}
        timings.update({_label(*variant): ([], []) for variant in variants})
        # Every run of a variant sits beside one of each other variant, so load from
        # other processes on the machine falls on all of them alike.
        for run in range(repeat):
            if frame_bytes.startswith(b"\xff\xd8"):
                timings["simplejpeg_ms"].append(_timed(simplejpeg.decode_jpeg, frame_bytes, "BGR")[1])
            encoded = np.frombuffer(frame_bytes, np.uint8)
            timings["opencv_ms"].append(_timed(cv2.imdecode, encoded, cv2.IMREAD_COLOR)[1])
            for method, scale in variants:
                if method == "seed" and run > 0:
                    continue
                image, decode_ms = _timed(decode_frame, frame_bytes, scale=scale)
                palette, palette_ms = _timed(palette_of, image, method)
                decode_list, palette_list = timings[_label(method, scale)]
                decode_list.append(decode_ms)
                palette_list.append(palette_ms)
                if run == 0:
                    bgr = palette.rgb[:, ::-1].astype(np.float64)
                    record["variants"][_label(method, scale)] = {
                        "inertia": kernels.palette_inertia(pixels, bgr),
                        "packed": palette.packed.tolist()}
        for decoder in ("simplejpeg_ms", "opencv_ms"):
            record[decoder] = float(np.median(timings[decoder])) if timings[decoder] else None
        for method, scale in variants:
            entry = record["variants"][_label(method, scale)]
            decode_list, palette_list = timings[_label(method, scale)]
            entry["decode_ms"] = float(np.median(decode_list))
            entry["palette_ms"] = float(np.median(palette_list))
            entry["total_ms"] = float(np.median(np.add(decode_list, palette_list)))
            if "seed" in record["variants"]:
                entry["inertia_ratio"] = entry["inertia"] / record["variants"]["seed"]["inertia"]
        frames.append(record)
        print(f"  {name}: " + ", ".join(
            f"{label} {entry['total_ms']:.1f} ms" for label, entry in record["variants"].items()),
            flush=True)
    return frames


def _summarise(frames, variants):
    fastest_decode = [min(ms for ms in (frame["simplejpeg_ms"], frame["opencv_ms"]) if ms is not None)
                      for frame in frames]
    summary = {
        "frames": len(frames),
        "simplejpeg_full_decode_ms": _median([frame["simplejpeg_ms"] for frame in frames]),
        "opencv_full_decode_ms": _median([frame["opencv_ms"] for frame in frames]),
        "fastest_full_decode_ms": _median(fastest_decode),
        "variants": {},
    }
    seed_total = (_median([frame["variants"]["seed"]["total_ms"] for frame in frames])
                  if variants and variants[0][0] == "seed" else None)
    for method, scale in variants:
        entries = [frame["variants"][_label(method, scale)] for frame in frames]
        total = _median([entry["total_ms"] for entry in entries])
        row = {
            "decode_ms": _median([entry["decode_ms"] for entry in entries]),
            "palette_ms": _median([entry["palette_ms"] for entry in entries]),
            "total_ms": total,
            "frames_per_s": 1e3 / total,
            "speedup_over_seed": seed_total / total if seed_total else None,
            "total_over_fastest_decode": total / summary["fastest_full_decode_ms"],
        }
        if seed_total:
            ratios = [entry["inertia_ratio"] for entry in entries]
            worst = int(np.argmax(ratios))
            row.update(inertia_ratio_median=_median(ratios), inertia_ratio_worst=ratios[worst],
                       worst_frame=frames[worst]["frame"])
        summary["variants"][_label(method, scale)] = row
    return summary


def _median(values):
    values = [value for value in values if value is not None]
    return float(np.median(values)) if values else None


def _print_folder(folder, frames, summary, variants):
    print(f"\n{folder}: {summary['frames']} frames, medians per frame, one core")
    header = (f"{'method':<14}{'decode ms':>10}{'palette ms':>11}{'total ms':>10}{'frames/s':>10}"
              f"{'x seed':>9}{'x decode':>9}{'inertia/seed median':>21}{'worst':>8}  worst frame")
    print(header)
    print("-" * len(header))
    for label, row in summary["variants"].items():
        speedup = f"{row['speedup_over_seed']:.0f}" if row["speedup_over_seed"] else "-"
        quality = (f"{row['inertia_ratio_median']:>21.4f}{row['inertia_ratio_worst']:>8.4f}  "
                   f"{row['worst_frame']}" if "inertia_ratio_median" in row else f"{'-':>21}{'-':>8}")
        print(f"{label:<14}{row['decode_ms']:>10.2f}{row['palette_ms']:>11.2f}{row['total_ms']:>10.2f}"
              f"{row['frames_per_s']:>10.1f}{speedup:>9}{row['total_over_fastest_decode']:>9.2f}{quality}")
    simplejpeg_ms = summary["simplejpeg_full_decode_ms"]
    simplejpeg_text = f"{simplejpeg_ms:.2f} ms" if simplejpeg_ms else "-"
    print(f"decode floor (full size, alone): simplejpeg {simplejpeg_text}, "
          f"OpenCV {summary['opencv_full_decode_ms']:.2f} ms; 'x decode' = total / fastest "
          f"({summary['fastest_full_decode_ms']:.2f} ms)")
    print("total = median of decode + palette per run, so not the sum of the two medians; "
          "x seed = seed's median total / this one's; inertia on full-size pixels, "
          "relative to seed's on the same frame")
