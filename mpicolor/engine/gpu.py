"""GPU ranks: the fast palette as array code for CuPy (NumPy runs the same code in tests), cuML for "seed".

The fast method here takes the stages of :mod:`mpicolor.engine.stages` for a batch of frames at once: `plan_fast`
cuts each frame's levels, `solve_plans` runs each stage for every frame of the batch, with the settings and the
decisions the CPU's numba search (`kernels.search.fast_search`) takes. The histogram, k-means++ and Lloyd are array
operations of a namespace ``xp`` (``cupy`` on a GPU rank, ``numpy`` in tests), batched over the frames. Sums whose
order could change a result are either exact (colour sums are whole numbers) or taken in the numba kernels' order
(a running sum, ``cumsum``), so that NumPy gives the CPU kernel's palettes bit for bit (docs/gpu-design.md).

CuPy is imported only when a GPU is asked for, never at import, so CPU-only installs never touch CUDA.
"""

import contextlib
import dataclasses
import os
from typing import NamedTuple

import numpy as np

from mpicolor.engine.devices import probe_gpus
from mpicolor.engine.kernels.chroma import finalist_inertias
from mpicolor.engine.kernels.histogram import colour_bins
from mpicolor.engine.kernels.kmeans import LANES
from mpicolor.engine.kernels.search import distinct_runs
from mpicolor.engine.palette import (
    check_chroma_block,
    check_image,
    check_settings,
    sample_indices,
    sample_rows,
    seed_colours,
    sorted_palette,
)
from mpicolor.engine.stages import (
    FAST,
    finer_threshold,
    kept_runs,
    level_thresholds,
    lloyd_tolerance,
    restart_level,
    restart_uniforms,
    settled,
    too_few_points,
)

__all__ = ["GpuDevice", "GpuUnavailable", "extract_palettes"]

# Device memory one rank may hold (CuPy's pool limit); about 22 ranks share a GPU in the original's
# layout, so the default leaves room for their CUDA contexts on a 32 GB device. MPICOLOR_GPU_MEMORY
# (bytes) changes it.
DEFAULT_MEMORY_LIMIT = 1 << 30
MIN_PADDED = 64  # smallest padded level length: buckets of powers of two above it
# Device bytes a frame holds per pixel of its row sample while its batch is computed: the sample (3), its bin
# slots (8), its fine, exact and (when unsettled) finer levels (points, moments, weights: 7 float64 each, at most
# one bin a pixel) and the temporaries of `_bins` (int32 channels and codes, unique's int64 index, inverse and
# counts: about 48).
PLAN_BYTES_PER_SAMPLED_PIXEL = 3 + 8 + 3 * 56 + 48


class GpuUnavailable(RuntimeError):
    """This process cannot compute on a GPU; the message says why (no CuPy, no device, no cuML)."""


def extract_palettes(images, clusters=5, seed=0, xp=None, chroma_blocks=None):
    """Fast palettes of a batch of frames, computed with the array namespace ``xp``.

    The same answer as ``[extract_palette(image, clusters, "fast", seed, block) for image, block in zip(images,
    chroma_blocks)]``:
    with ``xp=numpy`` identical palettes (tested on real frames), on CuPy identical unless a
    reduction run in the device's order breaks a near-tie another way (docs/gpu-design.md).

    Parameters
    ----------
    images : sequence of ndarray of shape (height, width, 3), uint8
        BGR frames, as `mpicolor.engine.decode.decode_frame` returns; sizes may differ.
    clusters : int, default 5
    seed : int, default 0
    xp : module, default None
        ``numpy`` or ``cupy``; None takes CuPy on the current device, and raises `GpuUnavailable`
        when there is none.
    chroma_blocks : sequence of (int, int), default None
        Per frame, as `extract_palette`'s ``chroma_block``; None: ``(1, 1)`` for every frame.

    Returns
    -------
    list of Palette
    """
    images = list(images)
    chroma_blocks = [(1, 1)] * len(images) if chroma_blocks is None else list(chroma_blocks)
    if len(chroma_blocks) != len(images):
        raise ValueError(f"chroma_blocks has {len(chroma_blocks)} entries for {len(images)} images; give one a frame")
    for image in images:
        check_image(image)
    chroma_blocks = [check_chroma_block(block) for block in chroma_blocks]
    check_settings(clusters, "fast", seed)
    if xp is None:
        xp = cupy_namespace()
    solved = fast_colours(images, int(clusters), int(seed), xp, chroma_blocks=chroma_blocks)
    return [sorted_palette(bgr, counts, int(clusters)) for bgr, counts in solved]


def cupy_namespace():
    """CuPy, when this process sees a usable CUDA device; else `GpuUnavailable` with the reason."""
    count, reason = probe_gpus()
    if count == 0:
        raise GpuUnavailable(reason)
    import cupy
    return cupy


def memory_limit():
    """Bytes of device memory a GPU rank may use: ``MPICOLOR_GPU_MEMORY`` or `DEFAULT_MEMORY_LIMIT`; ValueError
    for a value that is not a number of bytes >= 16 MiB."""
    text = os.environ.get("MPICOLOR_GPU_MEMORY", "")
    if not text:
        return DEFAULT_MEMORY_LIMIT
    if not text.isdigit() or int(text) < 1 << 24:
        raise ValueError(f"MPICOLOR_GPU_MEMORY={text!r} should be a number of bytes >= 16777216")
    return int(text)


class GpuDevice:
    """A GPU rank's device: its binding, its memory bound, and the palette methods on it.

    Parameters
    ----------
    device : int or None
        CUDA device of this rank (``Placement.device``); None keeps CuPy's current device.
    method : {"fast", "seed"}
        ``"seed"`` needs cuML (x86_64 and aarch64 only) and says so by `GpuUnavailable`; with
        ``xp=numpy`` it is scikit-learn's.
    xp : module, default None
        CuPy when None; ``numpy`` runs the same code on the CPU (tests).
    memory : int, default None
        Device bytes this rank may hold; None takes `memory_limit`. CuPy's pool is capped at it;
        a batch's frames take at most half of it (`batch_budget`, by `frame_bytes`) and the
        k-means working arrays the other half.

    Raises
    ------
    GpuUnavailable
        No usable device, or no cuML for ``"seed"``.
    """

    def __init__(self, device=None, method="fast", xp=None, memory=None):
        self.xp = cupy_namespace() if xp is None else xp
        self.device = device
        self.method = method
        self.memory = memory_limit() if memory is None else memory
        self.batch_budget = self.memory // 2
        self.kmeans = None
        if method == "seed" and self.xp is not np:
            try:
                from cuml.cluster import KMeans
            except ImportError as error:
                raise GpuUnavailable(f"cuML is not installed ({error}); method 'seed' on a GPU needs it "
                                     "(x86_64 and aarch64 only; see docs/gpus.md)") from None
            self.kmeans = KMeans
        if self.xp is not np:
            with self.bound():
                self.xp.get_default_memory_pool().set_limit(size=self.memory)

    def bound(self):
        """Context in which work runs on this rank's device."""
        if self.xp is np or self.device is None:
            return contextlib.nullcontext()
        return self.xp.cuda.Device(self.device)

    @staticmethod
    def frame_bytes(image):
        """Device bytes ``image`` (height, width, 3) takes in a batch of :meth:`colours`, at most."""
        *_, sampled = sample_rows(*image.shape[:2])
        return PLAN_BYTES_PER_SAMPLED_PIXEL * sampled

    def colours(self, images, clusters, seed, chroma_blocks=None):
        """Centres and counts of every frame, as `mpicolor.engine.palette.sorted_palette` takes them.

        The caller keeps a batch within `batch_budget` (the sum of its frames' `frame_bytes`). ``chroma_blocks``:
        per frame, as `extract_palette`'s ``chroma_block`` (None: ``(1, 1)`` each); ``"seed"`` needs none.

        ``"fast"`` computes the whole batch at once; ``"seed"`` runs cuML frame by frame.

        Returns
        -------
        list of (ndarray of shape (k, 3), uint8, ndarray of shape (k,))
        """
        with self.bound():
            if self.method == "seed":
                return [seed_colours(image, clusters, seed, self.kmeans) for image in images]
            return fast_colours(images, clusters, seed, self.xp, self.memory - self.batch_budget, chroma_blocks)


class Level(NamedTuple):
    """Weighted points one stage of the fast k-means runs on, channel-major.

    Attributes
    ----------
    points : array of shape (3, n), float64
        B, G, R of each point (a bin's mean colour, or an exact colour).
    weights : array of shape (n,), float64
        Sampled pixels of each point.
    moments : array of shape (3, n), float64
        ``weights * points`` as whole numbers: the per-bin colour sums.
    """

    points: object
    weights: object
    moments: object

    @property
    def size(self):
        return self.weights.shape[0]


@dataclasses.dataclass
class FastPlan:
    """What the fast k-means of one frame runs: its levels, the restarts' random numbers, the tolerance.

    Built by `plan_fast` from the frame's colour levels, run by `solve_plans`.

    Attributes
    ----------
    levels : tuple of two Level
        Restarts converge on the first; the best runs of distinct configurations are ranked on
        the second, where the winner converges (the two may be one).
    uniforms : ndarray of shape (FAST.restarts, clusters, trials), float64, or None
        Random numbers of the k-means++ restarts; None when the frame has at most ``clusters``
        colours, each then its own cluster (``levels`` holds the exact colours alone).
    tol : float
        Absolute Lloyd tolerance (`mpicolor.engine.stages.lloyd_tolerance`).
    finer : callable or None
        ``finer()`` cuts the finer final level of an unsettled frame (`mpicolor.engine.stages.finer_threshold`);
        None when the final level holds the exact colours already.
    choose_by : callable or None
        ``choose_by(finalists, inertias)``: the inertias the winner of converged finalists (n, clusters, 3) is
        chosen by (`mpicolor.engine.kernels.chroma.finalist_inertias`, on the host's frame); None for the inertias.
    """

    levels: tuple
    uniforms: np.ndarray | None
    tol: float
    finer: object = None
    choose_by: object = None


def plan_fast(levels_at, clusters, seed, variance, sample_size):
    """Cut the levels of a frame's fast k-means (stage 3 of `mpicolor.engine.stages`).

    Parameters
    ----------
    levels_at : callable
        ``levels_at(thresholds)`` returns a `Level` of `kernels.histogram.adaptive_levels` per threshold; a
        threshold of 0 gives every exact colour of the sample.
    clusters, seed : int
    variance : float
        Mean channel variance of the fine bins (`kernels.histogram.histogram_variance`).
    sample_size : int
        Pixels in the sample.

    Returns
    -------
    FastPlan
    """
    restart, final = levels_at(level_thresholds(FAST, variance, sample_size))
    tol = lloyd_tolerance(FAST, variance)
    if too_few_points(final.size, clusters):
        (final,) = levels_at([0.0])
        if too_few_points(final.size, clusters):
            return FastPlan((final, final), None, 0.0)
        return FastPlan((final, final), restart_uniforms(seed, clusters), tol)
    restart = (restart, final)[restart_level(restart.size, clusters)]
    return FastPlan((restart, final), restart_uniforms(seed, clusters), tol,
                    lambda: levels_at(finer_threshold(FAST, variance, sample_size))[0])


def solve_plans(plans, clusters, kmeans):
    """Run the fast k-means of several frames, stage by stage, so that each stage is one batch of array work.

    Stages 4 to 7 of `mpicolor.engine.stages`: the restarts on ``levels[0]``, the ranking of distinct
    configurations on ``levels[1]``, the effort an unsettled frame gets (its finer level), the winner.

    Parameters
    ----------
    plans : list of FastPlan
    clusters : int
    kmeans : BatchedKMeans
        Runs the k-means of many tasks at once: ``restarts(tasks, max_iter)`` with tasks ``(level, uniforms,
        tol)`` returns per task the centres (restarts, clusters, 3) and inertias (restarts,) of k-means++ then
        Lloyd (``max_iter`` iterations at most); ``converge(tasks, max_iter)`` with tasks ``(level, centres,
        tol)`` returns per task ``(centres, labels, inertia)`` after at most ``max_iter`` Lloyd iterations from
        the given centres; ``counts(level, labels, clusters)`` the weight per label; ``to_host(array)`` a NumPy
        array. Centres and inertias are NumPy values.

    Returns
    -------
    list of (ndarray of shape (k, 3), uint8, ndarray of shape (k,), float64)
        Per plan, the rounded BGR centres and the sampled pixels nearest each.
    """
    searched = [plan for plan in plans if plan.uniforms is not None]
    runs = kmeans.restarts([(plan.levels[0], plan.uniforms, plan.tol) for plan in searched], FAST.max_iter)
    chosen = [(p, centres) for p, (run_centres, inertia) in enumerate(runs)
              for centres in run_centres[distinct_runs(run_centres, inertia, FAST.same_configuration, FAST.scored)]]
    for keep, iterations in FAST.ranking:
        stepped = kmeans.converge([(searched[p].levels[1], centres, searched[p].tol) for p, centres in chosen],
                                  iterations)
        chosen = _kept_of_each(chosen, stepped, keep)
    finals = [(p, level, centres) for p, (level, finalists) in enumerate(_final_levels(searched, chosen, kmeans))
              for centres in finalists]
    converged = kmeans.converge([(level, centres, searched[p].tol) for p, level, centres in finals], FAST.final_iter)
    won = iter(_winners(searched, finals, converged))
    solved = []
    for plan in plans:
        if plan.uniforms is None:
            exact = plan.levels[-1]
            solved.append((np.rint(kmeans.to_host(exact.points).T).astype(np.uint8), kmeans.to_host(exact.weights)))
        else:
            level, (centres, labels, _) = next(won)
            # means of colours lie in [0, 255]: rounding needs no clipping
            solved.append((np.rint(centres).astype(np.uint8), kmeans.counts(level, labels, clusters)))
    return solved


def _final_levels(searched, chosen, kmeans):
    """Per searched plan, the level its winner converges on and the finalists that converge there: the first on
    the final level when `settled`, else both on the finer level."""
    finalists = {}
    for p, centres in chosen:
        finalists.setdefault(p, []).append(centres)
    levels = []
    for p, plan in enumerate(searched):
        runs = finalists[p]
        final = plan.levels[1]
        if plan.finer is not None and len(runs) > 1 and not settled(
                kmeans.to_host(final.points).astype(np.float32), kmeans.to_host(final.weights), runs[0], runs[1], FAST):
            levels.append((plan.finer(), runs))
        else:
            levels.append((final, runs[:1]))
    return levels


def _winners(searched, finals, converged):
    """Per plan, in plan order, its level and the ``(centres, labels, inertia)`` of its finalist of lowest inertia:
    on the level, or on the sample with interpolated chroma (`FastPlan.choose_by`)."""
    by_plan = {}
    for (p, level, _), result in zip(finals, converged):
        by_plan.setdefault(p, []).append((level, result))
    winners = []
    for p, results in by_plan.items():
        inertias = np.array([inertia for _, (_, _, inertia) in results])
        if searched[p].choose_by is not None:
            finalists = np.stack([centres for _, (centres, _, _) in results]).astype(np.float64)
            inertias = searched[p].choose_by(finalists, inertias)
        winners.append(results[kept_runs(inertias, 1)[0]])
    return winners


def _kept_of_each(chosen, stepped, keep):
    # per plan, in plan order, its runs that `kept_runs` keeps of their inertias in `stepped`
    by_plan = {}
    for index, (plan, _) in enumerate(chosen):
        by_plan.setdefault(plan, []).append(index)
    return [(plan, stepped[indices[run]][0]) for plan, indices in by_plan.items()
            for run in kept_runs(np.array([stepped[index][2] for index in indices]), keep)]


def fast_colours(images, clusters, seed, xp, batch_bytes=DEFAULT_MEMORY_LIMIT // 2, chroma_blocks=None):
    """The fast method's centres and counts for a batch of frames (see `extract_palettes`).

    Every frame's sample is histogrammed on its own; the k-means stages then run for the whole
    batch at once (`BatchedKMeans`).
    """
    if chroma_blocks is None:
        chroma_blocks = [(1, 1)] * len(images)
    plans = [_plan(xp, image, clusters, seed, block) for image, block in zip(images, chroma_blocks)]
    return solve_plans(plans, clusters, BatchedKMeans(xp, batch_bytes, clusters))


def _plan(xp, image, clusters, seed, chroma_block=(1, 1)):
    # Only the sample goes to the device: at most SAMPLE_MAX pixels, 432 kB. The comparison on interpolated chroma
    # reads the frame's neighbouring pixels: it runs on the host's frame, as the CPU's search runs it.
    sample = xp.asarray(image.reshape(-1, 3)[sample_indices(*image.shape[:2])])
    plan = plan_fast(lambda thresholds: [_adaptive_level(xp, sample, threshold) for threshold in thresholds],
                     clusters, seed, _mean_variance(xp, _bins(xp, sample, FAST.fine_bits)), sample.shape[0])
    rows, offsets, column_step, _ = sample_rows(*image.shape[:2])
    image = np.ascontiguousarray(image)
    plan.choose_by = lambda finalists, inertias: finalist_inertias(image, rows, offsets, column_step, *chroma_block,
                                                                   finalists, inertias, FAST)
    return plan


def _first_seen(xp, codes):
    # distinct codes numbered in the order the sample first reaches them, and each pixel's number
    _, first, inverse, counts = xp.unique(codes, return_index=True, return_inverse=True, return_counts=True)
    order = xp.argsort(first)
    rank = xp.empty_like(order)
    rank[order] = xp.arange(order.shape[0])
    return rank[inverse.reshape(-1)], counts[order], first[order]


def _bins(xp, sample, bits):
    # The colour histogram of `kernels.histogram.colour_histogram` as points: bins in the order the
    # sample first reaches them, mean colours from whole-number sums.
    channels = sample.astype(xp.int32)
    slots, counts, _ = _first_seen(xp, colour_bins(channels, bits, xp))
    return _level(xp, channels, slots, counts)


def _level(xp, channels, slots, counts):
    weights = counts.astype(xp.float64)
    moments = xp.stack([xp.bincount(slots, weights=channels[:, c].astype(xp.float64), minlength=counts.shape[0])
                        for c in range(3)])
    return Level(moments / weights, weights, moments)


def _adaptive_level(xp, sample, threshold):
    # one level of `kernels.histogram.adaptive_levels` on the sample: each pixel goes to the coarsest of its bins
    # light enough for the threshold, or to its exact colour; points in the order the sample first reaches their
    # bin (a split fine bin's exact colours at its place, by cell), as the kernel emits them.
    channels = sample.astype(xp.int64)
    fine_bits = FAST.fine_bits
    shift = 8 - fine_bits
    tagged = None  # per pixel: (depth << 3 * fine_bits) | bin of the point it goes to, once placed
    for bits in sorted(FAST.coarser_bits) + [fine_bits]:
        codes = colour_bins(channels, bits, xp)
        _, inverse, counts = xp.unique(codes, return_inverse=True, return_counts=True)
        light = counts[inverse.reshape(-1)] * float(1 << (2 * (8 - bits))) <= threshold
        tag = ((fine_bits - bits) << (3 * fine_bits)) | codes
        fresh = light if tagged is None else light & (tagged < 0)
        tagged = xp.where(fresh, tag, -1 if tagged is None else tagged)
    exact = tagged < 0
    tagged = xp.where(exact, colour_bins(channels, fine_bits, xp), tagged)
    group, _, first = _first_seen(xp, tagged)
    mask = (1 << shift) - 1
    cells = ((channels[:, 0] & mask) << (2 * shift)) | ((channels[:, 1] & mask) << shift) | (channels[:, 2] & mask)
    _, inverse, counts = xp.unique(first[group] * (1 << (3 * shift)) + xp.where(exact, cells, 0),
                                   return_inverse=True, return_counts=True)
    return _level(xp, channels, inverse.reshape(-1), counts)


def _prefix_sum(values):
    """Cumulative sum along the last axis; NumPy adds in index order, as the numba kernels' loops do."""
    return values.cumsum(axis=-1)


def _running_sum(values):
    """Sum along the last axis in index order (NumPy's ``sum`` adds pairwise, which rounds otherwise)."""
    return _prefix_sum(values)[..., -1]


def _lane_sum(products):
    """`kernels.kmeans.lane_sum` along the last axis, whose length is a multiple of its lanes (padded levels are)."""
    lanes = _running_sum(products.reshape(products.shape[:-1] + (-1, LANES)).swapaxes(-1, -2))
    return (lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3])


def _mean_variance(xp, level):
    # `kernels.histogram.histogram_variance`, operation for operation.
    total = float(_running_sum(level.weights))
    variance = 0.0
    for c in range(3):
        mean = float(_running_sum(level.weights * level.points[c])) / total
        variance += float(_running_sum(level.weights * (level.points[c] - mean) ** 2)) / total
    return variance / 3.0


def _to_host(array):
    return array.get() if hasattr(array, "get") else np.asarray(array)


class BatchedKMeans:
    """The k-means of `solve_plans` as batched array operations.

    Runs of similar length are padded to a common power of two with zero-weight points at the
    origin and computed together, at most ``batch_bytes`` of working arrays at a time. A padded
    point weighs nothing in any sum, never counts as a changed label and is never the farthest
    point; padding only adds ``+0.0`` to the running sums, so it changes no result.
    """

    def __init__(self, xp, batch_bytes, clusters):
        self.xp = xp
        self.batch_bytes = batch_bytes
        # working arrays per run and padded point, at most 8 bytes a value: points, moments, weights, and about six
        # (clusters, n) arrays in the distance and update steps
        self.bytes_per_point = 8 * (8 + 6 * clusters)

    to_host = staticmethod(_to_host)

    def restarts(self, tasks, max_iter):
        runs = [(task, run) for task, (_, uniforms, _) in enumerate(tasks) for run in range(len(uniforms))]
        centres = [np.empty(uniforms.shape[:2] + (3,)) for _, uniforms, _ in tasks]
        inertia = [np.empty(len(uniforms)) for _, uniforms, _ in tasks]
        for batch, arrays in self._batches([tasks[task][0] for task, _ in runs], runs):
            uniforms = self.xp.asarray(np.stack([tasks[task][1][run] for task, run in batch]))
            tol = self.xp.asarray([tasks[task][2] for task, _ in batch], dtype=self.xp.float64)
            seeded = self._plusplus(arrays, uniforms)
            settled, _, run_inertia = self._lloyd(arrays, seeded, tol, max_iter)
            settled, run_inertia = _to_host(settled), _to_host(run_inertia)
            for row, (task, run) in enumerate(batch):
                centres[task][run], inertia[task][run] = settled[row], run_inertia[row]
        return list(zip(centres, inertia))

    def converge(self, tasks, max_iter):
        results = [None] * len(tasks)
        for batch, arrays in self._batches([level for level, _, _ in tasks], list(range(len(tasks)))):
            start = self.xp.asarray(np.stack([tasks[task][1] for task in batch]))
            tol = self.xp.asarray([tasks[task][2] for task in batch], dtype=self.xp.float64)
            settled, labels, inertia = self._lloyd(arrays, start, tol, max_iter)
            settled, inertia = _to_host(settled), _to_host(inertia)
            for row, task in enumerate(batch):
                results[task] = (settled[row], labels[row, :tasks[task][0].size], float(inertia[row]))
        return results

    def counts(self, level, labels, clusters):
        return _to_host(self.xp.bincount(labels, weights=level.weights, minlength=clusters))

    def _batches(self, levels, items):
        """Group items by padded level length and cut groups to the memory budget.

        Yields ``(items of the batch, (points, weights, moments, valid, last))`` with arrays of
        shapes (b, 3, n), (b, n), (b, 3, n), (b, n) bool and (b,) (index of the last real point).
        """
        groups = {}
        for level, item in zip(levels, items):
            length = max(MIN_PADDED, 1 << (level.size - 1).bit_length())
            groups.setdefault(length, []).append((level, item))
        for length, members in sorted(groups.items()):
            per_batch = max(1, self.batch_bytes // (self.bytes_per_point * length))
            for start in range(0, len(members), per_batch):
                batch = members[start:start + per_batch]
                yield [item for _, item in batch], self._padded([level for level, _ in batch], length)

    def _padded(self, levels, length):
        xp = self.xp
        distinct = {}
        for level in levels:
            distinct.setdefault(id(level), (len(distinct), level))
        # points in float32, as the numba kernels take them (`kernels.search._level`): the same rounding
        points = xp.zeros((len(distinct), 3, length), dtype=xp.float32)
        weights = xp.zeros((len(distinct), length))
        moments = xp.zeros((len(distinct), 3, length))
        for row, level in distinct.values():
            points[row, :, :level.size] = level.points
            weights[row, :level.size] = level.weights
            moments[row, :, :level.size] = level.moments
        # one padded copy per level, gathered for every run on it
        which = xp.asarray([distinct[id(level)][0] for level in levels])
        sizes = xp.asarray([level.size for level in levels])
        valid = xp.arange(length)[None, :] < sizes[:, None]
        return points[which], weights[which], moments[which], valid, sizes - 1

    def _plusplus(self, arrays, uniforms):
        # `kernels.kmeans.kmeans_plusplus` for every run of the batch at once.
        xp = self.xp
        points, weights, _, _, last = arrays
        runs, clusters, _ = uniforms.shape
        rows = xp.arange(runs)
        centres = xp.empty((runs, clusters, 3))
        cumulative = _prefix_sum(weights)
        first = self._pick(cumulative, uniforms[:, 0, 0] * cumulative[:, -1], last)
        centres[:, 0] = points[rows, :, first]
        closest = _squared_distances(points, centres[:, 0][:, None, :])[:, 0]
        for step in range(1, clusters):
            potential = _prefix_sum(weights * closest)
            picked = self._pick(potential[:, None, :], uniforms[:, step, :] * potential[:, -1:], last[:, None])
            trials = points[rows[:, None], :, picked]  # (runs, trials, 3)
            candidate = xp.minimum(closest[:, None, :], _squared_distances(points, trials))
            best = xp.argmin(_lane_sum(weights[:, None, :] * candidate), axis=1)  # first of equal potentials
            centres[:, step] = trials[rows, best]
            closest = candidate[rows, best]
        return centres

    def _pick(self, cumulative, target, last):
        # `kernels.kmeans._pick_by_potential`: the first index whose cumulative potential exceeds target,
        # else the last real point (a binary search there; counting here is the same on a non-decreasing row).
        return self.xp.minimum((cumulative <= target[..., None]).sum(axis=-1), last)

    def _lloyd(self, arrays, centres, tol, max_iter):
        # `kernels.kmeans.lloyd` for every run of the batch at once; a run stops when it would stop there.
        xp = self.xp
        points, weights, moments, valid, _ = arrays
        clusters = centres.shape[1]
        previous = xp.full(weights.shape, -1)
        active = xp.ones(len(centres), dtype=bool)
        for _ in range(max_iter):
            distances, labels = self._assign(points, centres)
            changed = xp.any((labels != previous) & valid, axis=1)
            previous = labels
            members = (labels[:, None, :] == xp.arange(clusters)[None, :, None]).astype(xp.float64)
            # whole numbers: exact in any order, so the centres are the numba kernel's
            mass = (members * weights[:, None, :]).sum(axis=2)
            sums = xp.matmul(members, moments.transpose(0, 2, 1))
            moving = active & changed
            updated, shift = self._update(arrays, distances, centres, mass, sums, moving)
            centres = xp.where(moving[:, None, None], updated, centres)
            active = moving & ~(shift <= tol)
            if not bool(active.any()):
                break
        distances, labels = self._assign(points, centres)
        return centres, labels, _running_sum(weights * distances)

    def _update(self, arrays, distances, centres, mass, sums, moving):
        xp = self.xp
        points, _, _, valid, _ = arrays
        filled = mass > 0
        updated = xp.where(filled[:, :, None], sums / xp.where(filled, mass, 1.0)[:, :, None], centres)
        squares = (updated - centres) ** 2
        shift = xp.zeros(len(centres))
        for j in range(centres.shape[1]):
            for c in range(3):
                # in the numba kernel's order: by cluster, then channel
                shift = shift + xp.where(filled[:, j], squares[:, j, c], 0.0)
        emptied = ~filled & moving[:, None]
        if bool(emptied.any()):
            # an emptied cluster moves to the farthest point, which then counts as at distance 0
            rows = xp.arange(len(centres))
            remaining = xp.where(valid, distances, -xp.inf)
            for j in range(centres.shape[1]):
                far = xp.argmax(remaining, axis=1)
                updated[:, j] = xp.where(emptied[:, j, None], points[rows, :, far], updated[:, j])
                remaining[rows, far] = xp.where(emptied[:, j], 0.0, remaining[rows, far])
            shift = xp.where(emptied.any(axis=1), xp.inf, shift)
        return updated, shift

    def _assign(self, points, centres):
        # nearest centre of every point, the lowest index on ties (argmin's first minimum)
        distances = _squared_distances(points, centres)
        labels = self.xp.argmin(distances, axis=1)
        return self.xp.min(distances, axis=1), labels


def _squared_distances(points, centres):
    """Squared distances (runs, k, n) from points (runs, 3, n), float32, to centres (runs, k, 3) rounded to float32,
    summed as numba does, in float32."""
    centres = centres.astype(points.dtype)
    d0 = points[:, None, 0, :] - centres[:, :, 0, None]
    d1 = points[:, None, 1, :] - centres[:, :, 1, None]
    d2 = points[:, None, 2, :] - centres[:, :, 2, None]
    return d0 * d0 + d1 * d1 + d2 * d2

