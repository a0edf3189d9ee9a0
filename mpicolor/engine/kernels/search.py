"""One frame's whole fast search in one numba call, the ranking of runs, and the sorted palette."""

import time

import numpy as np

from mpicolor.engine.jit import kernel
from mpicolor.engine.kernels.chroma import finalist_inertias
from mpicolor.engine.kernels.histogram import clear_coarser, coarser_rows, sample_bins, sample_levels
from mpicolor.engine.kernels.kmeans import _nearest, kmeans_runs, lloyd_runs, palette_inertia
from mpicolor.engine.stages import (
    FAST,
    finer_threshold,
    kept_runs,
    level_thresholds,
    lloyd_tolerance,
    local_trials,
    restart_level,
    settled,
    too_few_points,
)


@kernel
def _level(points, weights, moments, level, sizes):
    # level `level` of `sample_levels`'s arrays, contiguous, its points in float32 as the k-means takes them
    size = sizes[level]
    return points[level, :, :size].astype(np.float32), weights[level, :size].copy(), moments[level, :, :size].copy()


@kernel
def fast_search(image, rows, offsets, column_step, codes, ups, fine, coarser, slots, seen, uniforms, clusters, settings,
                chroma_rows=1, chroma_columns=1):
    """The stages of `mpicolor.engine.stages` for one frame in one call, from its pixels to its sorted colours.

    One numba call: the Python between the kernels was about a sixth of the palette on small frames.

    Parameters
    ----------
    image, rows, offsets, column_step, ups, fine, coarser
        As `sample_bins` takes them (``bits`` is ``settings.fine_bits``); ``fine`` and ``coarser`` are all zero
        again on return.
    codes : ndarray of shape (sample size,), int32
        Work space of exactly the sample's size (`colour_histogram`).
    slots, seen
        Work space of `sample_levels`, all zero, left so.
    uniforms : ndarray of shape (restarts, clusters, trials), float64
        The restarts' random numbers (`mpicolor.engine.stages.restart_uniforms`).
    clusters : int
    settings : FastSettings
        `mpicolor.engine.stages.FAST`.
    chroma_rows, chroma_columns : int, default 1
        The block over which the decode repeated each chroma sample (`mpicolor.engine.decode.repeated_chroma`):
        unsettled finalists are then compared on the sample with the chroma interpolated (`stages.chroma_decides`).

    Returns
    -------
    rgb, shares
        As `sorted_colours` returns them: of the centres rounded, ``k = clusters``, and the sampled pixels nearest
        each; or of the sample's ``k <= clusters`` exact colours.
    """
    bits = settings.fine_bits
    occupied, bins, variance = sample_bins(image, bits, rows, offsets, column_step, fine, ups, coarser, codes)
    thresholds = level_thresholds(settings, variance, codes.shape[0])
    points, weights, moments, sizes = sample_levels(codes, bins, occupied, bits, ups, coarser, thresholds, slots, seen)
    if too_few_points(sizes[1], clusters):
        points, weights, moments, sizes = sample_levels(codes, bins, occupied, bits, ups, coarser, np.zeros(1), slots,
                                                        seen)
    final = _level(points, weights, moments, sizes.shape[0] - 1, sizes)
    if sizes.shape[0] == 1 and too_few_points(sizes[0], clusters):
        clear_coarser(occupied, bits, ups, coarser)
        exact_points, exact_weights, _ = final
        bgr = np.empty((exact_weights.shape[0], 3), np.uint8)
        for i in range(exact_weights.shape[0]):
            for c in range(3):
                bgr[i, c] = np.uint8(np.rint(exact_points[c, i]))
        return sorted_colours(bgr, exact_weights)
    restart = final
    if sizes.shape[0] == 2 and restart_level(sizes[0], clusters) == 0:
        restart = _level(points, weights, moments, 0, sizes)
    tol = lloyd_tolerance(settings, variance)
    centres, inertia = kmeans_runs(restart[0], restart[1], restart[2], uniforms, settings.max_iter, tol)
    chosen = centres[distinct_runs(centres, inertia, settings.same_configuration, settings.scored)]
    for keep, iterations in settings.ranking:
        _, stepped = lloyd_runs(final[0], final[1], final[2], chosen, iterations, tol)
        chosen = chosen[kept_runs(stepped, keep)]
    level = final
    # a final level of exact colours (sizes of one level) has no finer one
    if sizes.shape[0] == 2 and chosen.shape[0] > 1 and not settled(final[0], final[1], chosen[0], chosen[1], settings):
        finer = sample_levels(codes, bins, occupied, bits, ups, coarser,
                              finer_threshold(settings, variance, codes.shape[0]), slots, seen)
        level = _level(finer[0], finer[1], finer[2], 0, finer[3])
    else:
        chosen = chosen[:1]
    clear_coarser(occupied, bits, ups, coarser)
    labels, converged = lloyd_runs(level[0], level[1], level[2], chosen, settings.final_iter, tol)
    converged = finalist_inertias(image, rows, offsets, column_step, chroma_rows, chroma_columns, chosen, converged,
                                  settings)
    winner = kept_runs(converged, 1)[0]
    counts = np.zeros(clusters)
    for i in range(labels.shape[1]):
        counts[labels[winner, i]] += level[1][i]
    # means of colours lie in [0, 255]: rounding needs no clipping
    return sorted_colours(np.rint(chosen[winner]).astype(np.uint8), counts)


@kernel
def sorted_colours(bgr, counts):
    """Colours as RGB with their shares, largest share first, equal shares by packed colour, smallest first.

    Parameters
    ----------
    bgr : ndarray of shape (k, 3), uint8
        Centres as B, G, R.
    counts : ndarray of shape (k,), float64
        Pixels nearest each, whole numbers (so that their sum is exact in any order).

    Returns
    -------
    rgb : ndarray of shape (k, 3), uint8
    shares : ndarray of shape (k,), float64
        ``counts / counts.sum()``, in the order of ``rgb``.
    """
    k = bgr.shape[0]
    total = 0.0
    for i in range(k):
        total += counts[i]
    shares = counts / total
    packed = np.empty(k, np.int64)
    for i in range(k):
        packed[i] = (np.int64(bgr[i, 2]) << 16) | (np.int64(bgr[i, 1]) << 8) | np.int64(bgr[i, 0])
    # insertion sort, stable: equal shares and colours keep their order
    order = np.arange(k)
    for i in range(1, k):
        j = i
        while j > 0:
            a, b = order[j], order[j - 1]
            if shares[a] > shares[b] or (shares[a] == shares[b] and packed[a] < packed[b]):
                order[j], order[j - 1] = b, a
                j -= 1
            else:
                break
    rgb = np.empty((k, 3), np.uint8)
    sorted_shares = np.empty(k)
    for i in range(k):
        for c in range(3):
            rgb[i, c] = bgr[order[i], 2 - c]
        sorted_shares[i] = shares[order[i]]
    return rgb, sorted_shares


@kernel
def _same_configuration(first, second, radius):
    # Every centre of each set within radius of some centre of the other (Hausdorff distance).
    squared = radius * radius
    for a, b in ((first, second), (second, first)):
        for i in range(a.shape[0]):
            if _nearest(a[i, 0], a[i, 1], a[i, 2], b) > squared:
                return False
    return True


@kernel
def distinct_runs(centres, inertia, radius, limit):
    """The best run of each distinct configuration, lowest inertia first.

    Two runs share a configuration when every centre of each lies within ``radius`` of a
    centre of the other.

    Parameters
    ----------
    centres : ndarray of shape (n_runs, clusters, 3), float64
    inertia : ndarray of shape (n_runs,), float64
    radius : float
    limit : int
        Most runs chosen.

    Returns
    -------
    ndarray of shape (<= limit,), int64
        Runs of distinct configurations, lowest inertia first (the first run on ties).
    """
    order = np.argsort(inertia, kind="mergesort")
    chosen = np.empty(limit, np.int64)
    found = 0
    for run in order:
        if found == limit:
            break
        distinct = True
        for other in range(found):
            if _same_configuration(centres[run], centres[chosen[other]], radius):
                distinct = False
                break
        if distinct:
            chosen[found] = run
            found += 1
    return chosen[:found]


def warm_up():
    """Compile the kernels, or load them from numba's cache, on tiny inputs.

    Returns
    -------
    float
        Seconds it took; the first call in a fresh environment includes compilation.
    """
    start = time.perf_counter()
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    table = np.zeros((1 << 12, 4), np.int32)
    codes = np.empty(16, np.int32)
    # the types the fast method passes: read-only sample rows (cached), a tuple of three coarser levels
    rows, offsets = np.arange(4), np.zeros(4, np.int64)
    rows.setflags(write=False)
    offsets.setflags(write=False)
    ups = (1, 2, 3)
    coarser = np.zeros((coarser_rows(4, ups), 4), np.int32)
    occupied, bins, _ = sample_bins(image, 4, rows, offsets, 1, table, ups, coarser, codes)
    seen = np.zeros(coarser.shape[0], np.uint8)
    points, weights, moments, sizes = sample_levels(codes, bins, occupied, 4, ups, coarser, np.array([1.0, 0.0]),
                                                    np.zeros(1 << 12, np.int32), seen)
    points, weights, moments = _level(points, weights, moments, 1, sizes)
    clear_coarser(occupied, 4, ups, coarser)
    uniforms = np.zeros((1, 2, local_trials(2)), np.float64)
    uniforms.setflags(write=False)  # as the fast method's, drawn once and shared
    centres, inertia = kmeans_runs(points, weights, moments, uniforms, 10, 0.0)
    lloyd_runs(points, weights, moments, centres, 10, 0.0)
    distinct_runs(centres, inertia, 1.0, 2)
    settings = FAST._replace(fine_bits=4, max_iter=10, final_iter=10)
    fast_search(image, rows, offsets, 1, codes, ups, table, coarser, np.zeros(1 << 12, np.int32), seen, uniforms, 2,
                settings)
    palette_inertia(image.reshape(16, 3), centres[0])
    sorted_colours(np.zeros((2, 3), np.uint8), np.ones(2))
    return time.perf_counter() - start

