"""`mpicolor bench kernel`: per-frame time and quality of the palette methods on real frames."""

import gc
import hashlib
import json
import os
import sys
import time

import cv2
import numpy as np
import simplejpeg
from threadpoolctl import threadpool_limits

from mpicolor.bench.run import DEFAULT_FRAMES, median
from mpicolor.engine.decode import SCALES, BadFrame, decode_frame, repeated_chroma
from mpicolor.engine.gpu import GpuDevice, GpuUnavailable
from mpicolor.engine.kernels import kmeans, warm_up
from mpicolor.engine.palette import METHODS, extract_palette, smooth_chroma, sorted_palette
from mpicolor.state.tarballs import IMAGE_SUFFIXES, BadTarball, index_tarball, read_member

BACKENDS = ("cpu", "gpu", "numpy")
# frame-size classes of the summary: name, test on (height, width), target of total / fastest decode
SIZE_CLASSES = (("1920x1080", lambda height, width: (height, width) == (1080, 1920), 1.4),
                ("<= 0.5 MP", lambda height, width: height * width <= 500_000, 1.7),
                ("other", lambda height, width: True, None))
WORST_TARGET = 3.0  # no frame's total above this many times its decode


def add_kernel_arguments(parser):
    """Add the options of ``mpicolor bench kernel`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("--frames", nargs="+", metavar="SOURCE", default=[DEFAULT_FRAMES],
                        help="tuning sources: folders of frames or tarballs of frames (as `mpicolor pack` writes "
                             f"them), one table each (default: {DEFAULT_FRAMES})")
    parser.add_argument("--validation", nargs="+", metavar="SOURCE", default=[],
                        help="validation sources, never used to choose a parameter: reported apart from the tuning "
                             "sources (python -m mpicolor.bench.footage builds both)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="every N-th frame of each source, for a quick look (default: 1, all)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    parser.add_argument("--seed-from", metavar="FILE",
                        help="take seed's inertia per frame from the --json report of an earlier run that ran seed, "
                             "matched by the frame's SHA-256, instead of running seed: the quality columns in a "
                             "minute rather than 20 (seed is left out of --methods)")
    parser.add_argument("--scale", nargs="+", type=int, default=[1], metavar="N",
                        help="decode scales of the fast method, one row each (default: 1)")
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
        Exit code: 0, or 2 for a bad option, a missing or unreadable source of frames, or a ``--seed-from``
        report without some frame's seed inertia.
    """
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    problems = [f"method {name!r} should be one of {', '.join(METHODS)}"
                for name in methods if name not in METHODS]
    problems += [f"--scale {scale} should be one of {SCALES}" for scale in args.scale if scale not in SCALES]
    for option in ("repeat", "every"):
        if getattr(args, option) < 1:
            problems.append(f"--{option} {getattr(args, option)} should be >= 1")
    groups = dict.fromkeys(args.frames, "tuning")
    groups.update(dict.fromkeys(args.validation, "validation"))
    problems += [f"frames source {source!r} not found (from {os.getcwd()}); pass --frames DIR or TARBALL"
                 for source in groups if not os.path.exists(source)]
    if problems:
        print("mpicolor bench kernel: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        sources = {source: _decodable(source, _frames(source)[::args.every]) for source in groups}
    except (BadTarball, OSError) as error:
        print(f"mpicolor bench kernel: {error}", file=sys.stderr)
        return 2
    empty = [source for source, frames in sources.items() if not frames]
    if empty:
        print(f"mpicolor bench kernel: no JPEG or PNG frames to time in {', '.join(empty)}", file=sys.stderr)
        return 2
    # each frame hashed once: the records keep it, --seed-from matches by it
    digests = {source: [hashlib.sha256(frame_bytes).hexdigest() for _, frame_bytes in frames]
               for source, frames in sources.items()}
    seed_inertia = {}
    if args.seed_from:
        try:
            seed_inertia = _seed_inertia(args.seed_from, sources, digests)
        except (OSError, ValueError) as error:
            print(f"mpicolor bench kernel: --seed-from {args.seed_from}: {error}", file=sys.stderr)
            return 2
        methods = [method for method in methods if method != "seed"]
    variants = [("seed", 1)] if "seed" in methods else []
    variants += [("fast", scale) for scale in args.scale] if "fast" in methods else []
    try:
        backends = {} if args.backend == "cpu" else {
            method: GpuDevice(method=method, xp=np if args.backend == "numpy" else None) for method in methods}
    except GpuUnavailable as error:
        print(f"mpicolor bench kernel: --backend {args.backend}: {error}", file=sys.stderr)
        return 2
    compile_seconds = warm_up()
    print(f"numba kernels, first call (compile or cache load): {compile_seconds:.2f} s")
    if args.seed_from:
        print(f"inertia/seed: seed's inertia per frame from {args.seed_from} (seed not run)")
    report = {"numba_first_call_s": compile_seconds, "backend": args.backend, "repeat": args.repeat,
              "every": args.every, "seed_from": args.seed_from, "sources": {}}
    palette_of = _palette_function(backends)
    if backends:
        tiny = np.arange(192, dtype=np.uint8).reshape(8, 8, 3)
        report["array_first_call_s"] = _timed(palette_of, tiny, "fast", (1, 1))[1] / 1e3
        print(f"array kernels ({args.backend}), first call: {report['array_first_call_s']:.2f} s")
    with threadpool_limits(1):
        for source, frames in sources.items():
            records = _bench_frames(frames, digests[source], variants, args.repeat, palette_of, seed_inertia)
            summary = _summarise(records, variants)
            _print_source(source, summary)
            if "fast" in backends:
                summary["batched_fast_ms_per_frame"] = _batched(frames, backends["fast"], args.repeat)
                print(f"fast@scale1, all {summary['frames']} frames in one call: "
                      f"{summary['batched_fast_ms_per_frame']:.2f} ms per frame (palette only)")
            report["sources"][source] = {"frames": records, "summary": summary}
    report["size_classes"] = _by_size_class(report["sources"], variants)
    _print_size_classes(report["size_classes"])
    report["groups"] = _by_group(report["sources"], groups, variants)
    _print_groups(report["groups"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(report, stream, indent=1)
        print(f"wrote {args.json}")
    return 0


def _seed_inertia(path, sources, digests):
    """Seed's inertia of every frame of ``sources`` by SHA-256 (``digests``, per source in frame order), from the
    report at ``path``; ValueError naming the frames it lacks."""
    with open(path, encoding="utf-8") as stream:
        try:
            report = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a JSON report of mpicolor bench kernel ({error})") from None
    known = {record["sha256"]: record["variants"]["seed"]["inertia"]
             for result in report.get("sources", {}).values() for record in result.get("frames", [])
             if "sha256" in record and "seed" in record.get("variants", {})}
    missing = [f"{source}: {name}" for source, frames in sources.items()
               for (name, _), digest in zip(frames, digests[source]) if digest not in known]
    if missing:
        raise ValueError(f"no seed inertia for {len(missing)} of the frames (first: {missing[0]}); write one with "
                         "--methods fast,seed --json FILE on the same frames")
    return known


def _palette_function(backends):
    """``palette_of(image, method, chroma_block)``: the CPU kernels without ``backends``, else the GPU backend by
    method."""
    if not backends:
        return lambda image, method, chroma_block: extract_palette(image, method=method, chroma_block=chroma_block)
    return lambda image, method, chroma_block: sorted_palette(
        *backends[method].colours([image], 5, 0, [chroma_block])[0], 5)


def _batched(frames, backend, repeat):
    # the GPU path's real use: one call for many frames
    decoded = [_decode(frame_bytes, 1, smooth_chroma("fast")) for _, frame_bytes in frames]
    images, blocks = [image for image, _ in decoded], [block for _, block in decoded]
    runs = [_timed(backend.colours, images, 5, 0, blocks)[1] for _ in range(repeat)]
    return float(np.median(runs)) / len(images)


def _frames(source):
    """``(name, bytes)`` of every frame of a folder (image files, by name) or of a tarball (in tar order)."""
    if os.path.isdir(source):
        names = sorted(name for name in os.listdir(source) if name.lower().endswith(IMAGE_SUFFIXES))
        frames = []
        for name in names:
            with open(os.path.join(source, name), "rb") as stream:
                frames.append((name, stream.read()))
        return frames
    index = index_tarball(source)
    fd = os.open(index.path, os.O_RDONLY)
    try:
        return [(member.name, read_member(fd, member)) for member in index.members]
    finally:
        os.close(fd)


def _decodable(source, frames):
    """The ``frames`` of ``source`` that decode; those a run would record as failures are left out, and named."""
    kept = []
    for name, frame_bytes in frames:
        try:
            decode_frame(frame_bytes)
        except BadFrame as error:
            print(f"mpicolor bench kernel: {source}: {name} left out, not a frame mpicolor decodes ({error})",
                  file=sys.stderr)
            continue
        kept.append((name, frame_bytes))
    return kept


def _label(method, scale):
    return method if method == "seed" else f"{method}@scale{scale}"


def _timed(function, *arguments, **keywords):
    start = time.perf_counter()
    result = function(*arguments, **keywords)
    return result, (time.perf_counter() - start) * 1e3


def _bench_frames(frames, digests, variants, repeat, palette_of, seed_inertia):
    records, timings = [], []
    for (name, frame_bytes), digest in zip(frames, digests):
        original = decode_frame(frame_bytes)  # the original's pixels: what inertia is measured on
        records.append({"frame": name, "sha256": digest, "height": original.shape[0], "width": original.shape[1],
                        "seed_inertia": seed_inertia.get(digest), "variants": {}})
        timing = {"simplejpeg_ms": [], "opencv_ms": []}
        timing.update({_label(*variant): ([], []) for variant in variants})
        timings.append(timing)
    # Each run times every frame once: a burst of load from other processes falls on one run of
    # many frames, not on every run of one.
    for run in range(repeat):
        # a collection of the benchmark's own garbage would land on the same frame of every run
        gc.collect()
        gc.disable()
        try:
            _time_run(frames, records, timings, variants, run, palette_of)
        finally:
            gc.enable()
        print(f"  run {run + 1} of {repeat}: {len(frames)} frames", flush=True)
    for record, timing in zip(records, timings):
        _frame_medians(record, timing, variants)
    return records


def _time_run(frames, records, timings, variants, run, palette_of):
    """One run of `_bench_frames`: each frame's reference decodes, then each method's decode and palette.

    Side by side, the decoders and the methods meet the same caches and allocator: timed in
    passes of their own, each sped up or slowed down by what the other pass left behind.
    """
    for (_, frame_bytes), record, timing in zip(frames, records, timings):
        if frame_bytes.startswith(b"\xff\xd8"):
            timing["simplejpeg_ms"].append(_timed(simplejpeg.decode_jpeg, frame_bytes, "BGR")[1])
        encoded = np.frombuffer(frame_bytes, np.uint8)
        timing["opencv_ms"].append(_timed(cv2.imdecode, encoded, cv2.IMREAD_COLOR)[1])
        for method, scale in variants:
            if method == "seed" and run > 0:
                continue
            (image, chroma_block), decode_ms = _timed(_decode, frame_bytes, scale, smooth_chroma(method))
            palette, palette_ms = _timed(palette_of, image, method, chroma_block)
            decode_list, palette_list = timing[_label(method, scale)]
            decode_list.append(decode_ms)
            palette_list.append(palette_ms)
            if run == 0:
                pixels = decode_frame(frame_bytes).reshape(-1, 3)
                inertia = kmeans.palette_inertia(pixels, palette.rgb[:, ::-1].astype(np.float64))
                record["variants"][_label(method, scale)] = {"inertia": inertia, "packed": palette.packed.tolist()}
                if method == "seed":
                    record["seed_inertia"] = inertia


def _decode(frame_bytes, scale, smooth):
    # as `palette_from_bytes` decodes: the pixels, and the block its fast decode repeats each chroma sample over
    return (decode_frame(frame_bytes, scale=scale, smooth_chroma=smooth),
            repeated_chroma(frame_bytes, scale, smooth))


def _frame_medians(record, timing, variants):
    """A frame's median times over the runs, total over fastest decode, inertia relative to seed's."""
    for decoder in ("simplejpeg_ms", "opencv_ms"):
        record[decoder] = float(np.median(timing[decoder])) if timing[decoder] else None
    record["fastest_decode_ms"] = min(ms for ms in (record["simplejpeg_ms"], record["opencv_ms"]) if ms is not None)
    for method, scale in variants:
        entry = record["variants"][_label(method, scale)]
        decode_list, palette_list = timing[_label(method, scale)]
        entry["decode_ms"] = float(np.median(decode_list))
        entry["palette_ms"] = float(np.median(palette_list))
        entry["total_ms"] = float(np.median(np.add(decode_list, palette_list)))
        entry["over_decode"] = entry["total_ms"] / record["fastest_decode_ms"]
        seed_inertia = record["seed_inertia"]
        if seed_inertia is not None:
            # a frame of one colour: seed's inertia is 0, and so must ours be
            entry["inertia_ratio"] = (entry["inertia"] / seed_inertia if seed_inertia
                                      else 1.0 if entry["inertia"] == 0 else float("inf"))


def _summarise(records, variants):
    summary = {
        "frames": len(records),
        "sizes": sorted({f"{record['width']}x{record['height']}" for record in records}),
        "simplejpeg_full_decode_ms": median([record["simplejpeg_ms"] for record in records]),
        "opencv_full_decode_ms": median([record["opencv_ms"] for record in records]),
        "fastest_full_decode_ms": median([record["fastest_decode_ms"] for record in records]),
        "variants": {},
    }
    seed_total = (median([record["variants"]["seed"]["total_ms"] for record in records])
                  if variants and variants[0][0] == "seed" else None)
    for method, scale in variants:
        label = _label(method, scale)
        total = median([record["variants"][label]["total_ms"] for record in records])
        row = {
            "decode_ms": median([record["variants"][label]["decode_ms"] for record in records]),
            "palette_ms": median([record["variants"][label]["palette_ms"] for record in records]),
            "total_ms": total,
            "frames_per_s": 1e3 / total,
            "speedup_over_seed": seed_total / total if seed_total else None,
        }
        row.update(_spread(records, label, "over_decode", "over_decode"))
        if "inertia_ratio" in records[0]["variants"][label]:
            row.update(_spread(records, label, "inertia_ratio", "inertia_ratio"))
        summary["variants"][label] = row
    return summary


def _spread(records, label, key, name):
    """Median and worst (largest) of a per-frame value, and the worst frame's name."""
    values = [record["variants"][label][key] for record in records]
    worst = int(np.argmax(values))
    return {f"{name}_median": median(values), f"{name}_worst": values[worst],
            f"{name}_worst_frame": records[worst]["frame"]}


def _by_size_class(sources, variants):
    """Per variant and frame-size class: frames, sets, median and worst total/decode and inertia/seed."""
    classes = {}
    for method, scale in variants:
        label = _label(method, scale)
        for name, _, target in SIZE_CLASSES:
            records = [dict(record, frame=f"{_short(source)}/{record['frame']}")
                       for source, result in sources.items() for record in result["frames"]
                       if _size_class(record) == name]
            if not records:
                continue
            row = {"frames": len(records), "target": target,
                   "sources": sorted({source for source, result in sources.items()
                                      for record in result["frames"] if _size_class(record) == name})}
            row.update(_spread(records, label, "over_decode", "over_decode"))
            if "inertia_ratio" in records[0]["variants"][label]:
                row.update(_spread(records, label, "inertia_ratio", "inertia_ratio"))
            classes.setdefault(label, {})[name] = row
    return classes


def _by_group(sources, groups, variants):
    """Per variant, group ("tuning", "validation") and source: the quality and cost of its frames."""
    table = {}
    for method, scale in variants:
        label = _label(method, scale)
        for source, result in sources.items():
            records = result["frames"]
            row = {"source": source, "frames": len(records),
                   "over_decode_median": median([record["variants"][label]["over_decode"] for record in records])}
            ratios = [record["variants"][label].get("inertia_ratio") for record in records]
            if None not in ratios:
                row.update(inertia_ratio_median=median(ratios), inertia_ratio_worst=max(ratios),
                           above_seed=sum(ratio > 1.0 for ratio in ratios))
            table.setdefault(label, {}).setdefault(groups[source], []).append(row)
    return table


def _print_groups(table):
    print("\nby source, tuning and validation apart: inertia/seed per frame (frames above 1.000 worse than seed), "
          "median x decode")
    rows = []
    for label, by_group in table.items():
        for group, sources in sorted(by_group.items(), key=lambda item: item[0] != "tuning"):
            for row in sources:
                quality = ([f"{row['inertia_ratio_median']:.4f}", f"{row['inertia_ratio_worst']:.4f}",
                            str(row["above_seed"])] if "above_seed" in row else ["-", "-", "-"])
                rows.append([label, group, _short(row["source"]), str(row["frames"])] + quality
                            + [f"{row['over_decode_median']:.2f}"])
    _print_table(["method", "group", "source", "frames", "inertia/seed", "worst", "above 1.000", "x decode"], rows)
    print("targets on every validation source: inertia/seed median <= 1.000, worst <= 1.003")


def _short(source):
    return os.path.basename(source.rstrip(os.sep))


def _size_class(record):
    return next(name for name, belongs, _ in SIZE_CLASSES if belongs(record["height"], record["width"]))


def _print_source(source, summary):
    print(f"\n{source}: {summary['frames']} frames ({', '.join(summary['sizes'])}), medians per frame, one core")
    rows = [[label, f"{row['decode_ms']:.2f}", f"{row['palette_ms']:.2f}", f"{row['total_ms']:.2f}",
             f"{row['frames_per_s']:.1f}", f"{row['speedup_over_seed']:.0f}" if row["speedup_over_seed"] else "-"]
            + _ratio_cells(row) for label, row in summary["variants"].items()]
    _print_table(["method", "decode ms", "palette ms", "total ms", "frames/s", "x seed"] + _RATIO_HEADER, rows)
    simplejpeg_ms = summary["simplejpeg_full_decode_ms"]
    simplejpeg_text = f"{simplejpeg_ms:.2f} ms" if simplejpeg_ms else "-"
    print(f"full decode alone, medians: simplejpeg {simplejpeg_text}, OpenCV "
          f"{summary['opencv_full_decode_ms']:.2f} ms; x decode = a frame's total (decode + palette) over its "
          "fastest full decode (either, default settings); inertia on the original's pixels, relative to seed's")


def _print_size_classes(classes):
    print("\nby frame size, over all sources: x decode and inertia/seed per frame")
    rows = [[label, name, str(row["frames"]), f"<= {row['target']}" if row["target"] else "-"] + _ratio_cells(row)
            for label, per_class in classes.items() for name, row in per_class.items()]
    _print_table(["method", "size", "frames", "target"] + _RATIO_HEADER, rows)
    print(f"targets: the median x decode shown per class, no frame above {WORST_TARGET}x; inertia/seed median "
          "<= 1.000, worst <= 1.003")


_RATIO_HEADER = ["x decode", "worst", "(frame)", "inertia/seed", "worst", "(frame)"]


def _ratio_cells(row):
    # median and worst of total/decode, then of inertia/seed when seed's inertia is known
    cells = [f"{row['over_decode_median']:.2f}", f"{row['over_decode_worst']:.2f}", row["over_decode_worst_frame"]]
    if "inertia_ratio_median" in row:
        return cells + [f"{row['inertia_ratio_median']:.4f}", f"{row['inertia_ratio_worst']:.4f}",
                        row["inertia_ratio_worst_frame"]]
    return cells + ["-", "-", ""]


def _print_table(header, rows):
    # columns as wide as their widest cell; text left, numbers right
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    left = [not any(cell[:1].isdigit() or cell[:2] == "<=" for cell in column[1:]) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(cell.ljust(width) if is_left else cell.rjust(width)
                         for cell, width, is_left in zip(cells, widths, left)).rstrip()

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))
