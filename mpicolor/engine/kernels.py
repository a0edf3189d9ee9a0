"""numba kernels of the fast palette: colour histogram, weighted k-means, inertia."""

import os
import time

# A read-only install (site-packages on a cluster) cannot hold numba's cache next to the
# code; give numba a writable per-user folder unless the user chose one.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
if "NUMBA_CACHE_DIR" not in os.environ and not os.access(_PACKAGE_DIR, os.W_OK):
    _CACHE_HOME = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_CACHE_HOME, "mpicolor", "numba")

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402


LANES = 4  # running sums of `lane_sum`


def local_trials(clusters):
    """Number of candidate centres tried per greedy k-means++ step.

    Parameters
    ----------
    clusters : int
        Number of clusters, >= 1.

    Returns
    -------
    int
        ``2 + int(log(clusters))``, scikit-learn's choice.
    """
    return 2 + int(np.log(clusters))


def _spread_bits():
    # bit k of a byte moved to bit 3 * k
    return np.array([sum(((value >> k) & 1) << (3 * k) for k in range(8)) for value in range(256)], np.int64)


SPREAD = _spread_bits()


@njit(cache=True, nogil=True)
def colour_bin(b, g, r, shift):
    """The bin of colour ``(b, g, r)`` with ``8 - shift`` bits per channel: its bits interleaved, B highest.

    Interleaved (Morton) bin numbers put similar colours in nearby bins, so that a frame's
    histogram touches few cache lines, and make the bin of fewer bits holding a bin a shift:
    ``colour_bin(...) >> 3 * d`` is the bin with ``d`` bits fewer per channel.

    Parameters
    ----------
    b, g, r : int
        0..255.
    shift : int
        Bits dropped per channel.

    Returns
    -------
    int
    """
    return (SPREAD[b >> shift] << 2) | (SPREAD[g >> shift] << 1) | SPREAD[r >> shift]


@njit(cache=True, nogil=True)
def _channel_of_bin(index, channel):
    # the bits of one channel (0: B, 1: G, 2: R) of an interleaved bin number
    value = 0
    index >>= 2 - channel
    for k in range(8):
        value |= ((index >> (3 * k)) & 1) << k
    return value


@njit(cache=True, nogil=True)
def colour_histogram(image, bits, rows, offsets, column_step, table, codes):
    """Quantise a sample of the pixels and sum them per colour bin.

    The sample is every ``column_step``-th pixel from ``offsets[k]`` of row ``rows[k]``.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
        BGR pixels.
    bits : int
        Bits kept per channel, 1..8: pixel ``(b, g, r)`` falls in bin
        ``colour_bin(b, g, r, 8 - bits)``.
    rows, offsets : ndarray of shape (n_rows,), int64
        Sampled rows and the first sampled column of each.
    column_step : int
        >= 1; the caller keeps the sample below 2 ** 31 / 255 pixels so that the int32
        sums cannot overflow.
    table : ndarray of shape (2 ** (3 * bits), 4), int32, all zero
        Filled with, per bin, the sampled pixel count, then the sums of B, G and R.
    codes : ndarray of shape (>= sample size,), int32
        Filled with each sampled colour, in sample order, as its bin shifted left by ``3 * (8 -
        bits)`` bits, or the colour's low bits in each channel (B highest): its cell in the bin.

    Returns
    -------
    occupied : ndarray of shape (n_occupied,), int64
        Indices of the non-empty bins in the order the sample first reached them, so
        that later passes (`gather_bins`) skip the empty ones.
    """
    shift = 8 - bits
    mask = (1 << shift) - 1
    # a channel's part of the code per value: the code is the three parts or'ed, three lookups a pixel
    parts = np.empty((3, 256), np.int32)
    for value in range(256):
        for c in range(3):
            parts[c, value] = (SPREAD[value >> shift] << (2 - c + 3 * shift)) | ((value & mask) << ((2 - c) * shift))
    occupied = np.empty(min(table.shape[0], codes.shape[0]) + 1, np.int64)
    found = 0
    sampled = 0
    for k in range(rows.shape[0]):
        line = image[rows[k]]
        for x in range(offsets[k], image.shape[1], column_step):
            b = line[x, 0]
            g = line[x, 1]
            r = line[x, 2]
            code = parts[0, b] | parts[1, g] | parts[2, r]
            codes[sampled] = code
            sampled += 1
            index = code >> (3 * shift)
            # branch-free: a new bin in one pixel of six or so would mispredict a branch
            occupied[found] = index
            found += table[index, 0] == 0
            table[index, 0] += 1
            table[index, 1] += b
            table[index, 2] += g
            table[index, 3] += r
    return occupied[:found]


def coarser_rows(bits, ups):
    """Rows of the table of `gather_bins`: the histograms of ``bits - up`` bits per channel for each of ``ups``."""
    return sum(1 << (3 * (bits - up)) for up in ups)


@njit(cache=True, nogil=True)
def _bases(bits, ups):
    # first row in `coarser` (see `gather_bins`) of each histogram of `ups`
    bases = np.zeros(len(ups), np.int64)
    for k in range(1, len(ups)):
        bases[k] = bases[k - 1] + (1 << (3 * (bits - ups[k - 1])))
    return bases


@njit(cache=True, nogil=True)
def gather_bins(table, occupied, bits, ups, coarser):
    """The occupied rows of a histogram, in the order of ``occupied``, the table all zero again, and
    the bins merged into bins of fewer bits per channel, in the same pass.

    Later passes then read the bins in order instead of across the 4 MB table.

    Parameters
    ----------
    table : ndarray of shape (n_bins, 4), int32
        As `colour_histogram` fills it.
    occupied : ndarray of shape (n_occupied,), int64
        Its occupied bin numbers (`colour_bin`), with ``bits`` per channel.
    bits : int
    ups : tuple of int
        Bits fewer per channel of each coarser histogram.
    coarser : ndarray of shape (coarser_rows(bits, ups), 4), int32, all zero
        Filled with the coarser histograms, one after the other, rows as `colour_histogram`
        fills its table; `clear_coarser` zeroes them again.

    Returns
    -------
    ndarray of shape (n_occupied, 4), int32
        Pixel count, then sums of B, G and R, per occupied bin.
    """
    bases = _bases(bits, ups)
    bins = np.empty((occupied.shape[0], 4), np.int32)
    for i in range(occupied.shape[0]):
        j = occupied[i]
        for c in range(4):
            bins[i, c] = table[j, c]
            table[j, c] = 0
        for k in range(len(ups)):
            row = bases[k] + (j >> (3 * ups[k]))
            for c in range(4):
                coarser[row, c] += bins[i, c]
    return bins


@njit(cache=True, nogil=True)
def clear_coarser(occupied, bits, ups, coarser):
    """Zero what `gather_bins` filled, so that the table can serve the next frame."""
    bases = _bases(bits, ups)
    for j in occupied:
        for k in range(len(ups)):
            row = bases[k] + (j >> (3 * ups[k]))
            for c in range(4):
                coarser[row, c] = 0


@njit(cache=True, nogil=True)
def histogram_variance(bins):
    """Variance of each channel over the bins' mean colours weighted by their pixels, averaged over the channels.

    Running sums in bin order, which `mpicolor.engine.gpu` repeats operation for operation: the
    total weight, then per channel the weighted mean and the weighted squared spread.

    Parameters
    ----------
    bins : ndarray of shape (n_bins, 4), int32
        As `gather_bins` returns them.

    Returns
    -------
    float
        scikit-learn's scale for the k-means tolerance.
    """
    # each running sum is its own chain, so that the chains of a pass overlap; the bins' means are
    # divided once and kept for the second pass (divisions are the slow part)
    means = np.empty((bins.shape[0], 3))
    total = weighted_b = weighted_g = weighted_r = 0.0
    for i in range(bins.shape[0]):
        count = bins[i, 0]
        total += count
        for c in range(3):
            means[i, c] = bins[i, c + 1] / count
        weighted_b += count * means[i, 0]
        weighted_g += count * means[i, 1]
        weighted_r += count * means[i, 2]
    mean_b, mean_g, mean_r = weighted_b / total, weighted_g / total, weighted_r / total
    spread_b = spread_g = spread_r = 0.0
    for i in range(bins.shape[0]):
        count = bins[i, 0]
        spread_b += count * (means[i, 0] - mean_b) ** 2
        spread_g += count * (means[i, 1] - mean_g) ** 2
        spread_r += count * (means[i, 2] - mean_r) ** 2
    variance = spread_b / total
    variance += spread_g / total
    variance += spread_r / total
    return variance / 3.0


@njit(cache=True, nogil=True)
def heavy_bins(bins, occupied, bits, threshold):
    """The bins too heavy to stand as one point at ``threshold`` (see `adaptive_levels`).

    Parameters
    ----------
    bins : ndarray of shape (n_occupied, 4), int32
    occupied : ndarray of shape (n_occupied,), int64
    bits : int
    threshold : float

    Returns
    -------
    heavy : ndarray of shape (n_heavy,), int64
        Those of ``occupied``, in its order.
    slot : ndarray of shape (n_occupied,), int64
        The position of ``occupied[i]`` in ``heavy``, or -1.
    """
    area = float(1 << (2 * (8 - bits)))
    heavy = np.empty(occupied.shape[0], np.int64)
    slot = np.full(occupied.shape[0], -1, np.int64)
    found = 0
    for i in range(occupied.shape[0]):
        if bins[i, 0] * area > threshold:
            heavy[found] = occupied[i]
            slot[i] = found
            found += 1
    return heavy[:found], slot


@njit(cache=True, nogil=True)
def exact_colours(codes, bits, heavy, slots, counts):
    """Every distinct colour of the sample inside some bins, with its pixel count.

    Counts exact colours inside the given bins only, so memory follows the number of
    those bins rather than 2 ** 24 colours.

    Parameters
    ----------
    codes : ndarray of shape (n_sampled,), int32
        The sampled colours, as `colour_histogram` records them.
    bits : int
        Bits per channel of the bins.
    heavy : ndarray of shape (n_heavy,), int64
        The bins whose colours are wanted.
    slots : ndarray of shape (2 ** (3 * bits),), int32, all zero
        Work space, left all zero again.
    counts : ndarray of shape (>= n_heavy * 2 ** (3 * (8 - bits)),), int32, all zero
        Work space, left all zero again.

    Returns
    -------
    points : ndarray of shape (3, n_colours), float64
        B, G and R of each distinct colour, channel-major: the colours of ``heavy[0]``
        first, by increasing cell (B, then G, then R low bits), then those of ``heavy[1]``...
    weights : ndarray of shape (n_colours,), float64
        Sampled pixel count of each colour.
    offsets : ndarray of shape (n_heavy + 1,), int64
        The colours of ``heavy[i]`` are ``offsets[i]:offsets[i + 1]``.
    """
    shift = 8 - bits
    mask = (1 << shift) - 1
    cells = 1 << (3 * shift)
    for slot in range(heavy.shape[0]):
        slots[heavy[slot]] = slot + 1
    distinct = 0
    if heavy.shape[0] > 0:
        # a branch on the heavy bins: the branch-free form (every pixel counted, the light bins' block
        # cleared) was 20 us faster on footage, but numba 0.56 (Debian 12's) loaded it from its cache as
        # code that crashed on ppc64le (run/power-check.sh)
        for code in codes:
            slot = slots[code >> (3 * shift)]
            if slot > 0:
                cell = (slot - 1) * cells + (code & (cells - 1))
                if counts[cell] == 0:
                    distinct += 1
                counts[cell] += 1
    points = np.empty((3, distinct), np.float64)
    weights = np.empty(distinct, np.float64)
    offsets = np.empty(heavy.shape[0] + 1, np.int64)
    row = 0
    for slot in range(heavy.shape[0]):
        j = heavy[slot]
        slots[j] = 0
        offsets[slot] = row
        base_b = _channel_of_bin(j, 0) << shift
        base_g = _channel_of_bin(j, 1) << shift
        base_r = _channel_of_bin(j, 2) << shift
        for cell in range(cells):
            count = counts[slot * cells + cell]
            if count > 0:
                counts[slot * cells + cell] = 0
                points[0, row] = base_b + (cell >> (2 * shift))
                points[1, row] = base_g + ((cell >> shift) & mask)
                points[2, row] = base_r + (cell & mask)
                weights[row] = count
                row += 1
    offsets[heavy.shape[0]] = row
    return points, weights, offsets


@njit(cache=True, nogil=True)
def adaptive_levels(bins, occupied, bits, ups, coarser, thresholds, exact_slot, exact_points, exact_weights, offsets,
                    seen):
    """Points of levels whose resolution follows the mass: bins split while they are heavy.

    A bin of width ``w`` per channel holding ``n`` sampled pixels stands as one point at
    their mean colour while ``n * w ** 2 <= threshold``; otherwise it splits into its bins
    of the next finer histogram, down to the fine bins, whose heavy ones split into their
    exact colours. ``n * w ** 2`` bounds what putting all of the bin's pixels in one
    cluster can cost, so dense regions, where cluster borders matter, get fine points and
    sparse ones few.

    Parameters
    ----------
    bins, occupied
        The fine bins, as `gather_bins` returns them, and their numbers.
    bits : int
        Bits per channel of the fine bins.
    ups, coarser
        The coarser histograms (`gather_bins`), finest first; the last is the coarsest a point
        can be.
    thresholds : ndarray of shape (n_levels,), float64
        One level per threshold, at most 8.
    exact_slot : ndarray of shape (n_occupied,), int64
        For a fine bin heavier than the smallest threshold allows, its index into
        ``offsets`` (see `exact_colours`), else -1: the bin then stands as one point.
    exact_points, exact_weights, offsets
        As `exact_colours` returns them.
    seen : ndarray of shape (coarser_rows(bits, ups),), uint8, all zero
        Work space, left all zero again.

    Returns
    -------
    points : ndarray of shape (n_levels, 3, most), float64
        Level ``l`` is ``points[l, :, :sizes[l]]``: channel-major, in the order the sample
        first reached each point's bin, the exact colours of a bin in the order of
        `exact_colours`.
    weights : ndarray of shape (n_levels, most), float64
    moments : ndarray of shape (n_levels, 3, most), float64
        Colour sums, whole numbers (see `lloyd`).
    sizes : ndarray of shape (n_levels,), int64
    """
    bases = _bases(bits, ups)
    fine_area = float(1 << (2 * (8 - bits)))
    most = occupied.shape[0] + exact_weights.shape[0]
    levels = thresholds.shape[0]
    points = np.empty((levels, 3, most), np.float64)
    weights = np.empty((levels, most), np.float64)
    moments = np.empty((levels, 3, most), np.float64)
    rows = np.zeros(levels, np.int64)
    for i in range(occupied.shape[0]):
        j = occupied[i]
        for level in range(levels):
            threshold = thresholds[level]
            row = rows[level]
            source = -1  # the coarser row of the point, -2 the fine bin itself, -1 none (placed or exact)
            for k in range(len(ups) - 1, -1, -1):
                index = bases[k] + (j >> (3 * ups[k]))
                if coarser[index, 0] * (fine_area * (1 << (2 * ups[k]))) <= threshold:
                    if not seen[index] & (1 << level):
                        seen[index] |= 1 << level
                        source = index
                    break
            else:
                if bins[i, 0] * fine_area <= threshold or exact_slot[i] < 0:
                    source = -2
                else:
                    slot = exact_slot[i]
                    for e in range(offsets[slot], offsets[slot + 1]):
                        weights[level, row] = exact_weights[e]
                        for c in range(3):
                            points[level, c, row] = exact_points[c, e]
                            moments[level, c, row] = exact_points[c, e] * exact_weights[e]
                        row += 1
            if source != -1:
                # one point at a bin's mean colour, from its whole-number sums
                count = coarser[source, 0] if source >= 0 else bins[i, 0]
                weights[level, row] = count
                for c in range(3):
                    total = coarser[source, c + 1] if source >= 0 else bins[i, c + 1]
                    moments[level, c, row] = total
                    points[level, c, row] = total / count
                row += 1
            rows[level] = row
    for j in occupied:
        for k in range(len(ups)):
            seen[bases[k] + (j >> (3 * ups[k]))] = 0
    return points, weights, moments, rows


@njit(cache=True, nogil=True)
def sample_bins(image, bits, rows, offsets, column_step, fine, ups, coarser, codes):
    """`colour_histogram`, `gather_bins` and `histogram_variance` in one call.

    Returns
    -------
    occupied, bins : ndarray
        As `colour_histogram` and `gather_bins` return them; ``fine`` is all zero again.
    variance : float
        `histogram_variance` of the bins.
    """
    occupied = colour_histogram(image, bits, rows, offsets, column_step, fine, codes)
    bins = gather_bins(fine, occupied, bits, ups, coarser)
    return occupied, bins, histogram_variance(bins)


@njit(cache=True, nogil=True)
def sample_levels(codes, bins, occupied, bits, ups, coarser, thresholds, slots, seen):
    """`heavy_bins` at the smallest threshold, `exact_colours` of those, `adaptive_levels`, in one call."""
    heavy, exact_slot = heavy_bins(bins, occupied, bits, thresholds.min())
    exact_points, exact_weights, offsets = exact_colours(codes, bits, heavy, slots,
                                                         np.zeros(heavy.shape[0] << (3 * (8 - bits)), np.int32))
    return adaptive_levels(bins, occupied, bits, ups, coarser, thresholds, exact_slot, exact_points, exact_weights,
                           offsets, seen)


@njit(cache=True, nogil=True)
def _weighted_sum(weights, values):
    # A plain loop, not np.dot: BLAS may split the sum by thread count.
    total = 0.0
    for i in range(weights.shape[0]):
        total += weights[i] * values[i]
    return total


@njit(cache=True, nogil=True)
def _closer_to(points, weights, c0, c1, c2, closest, candidate):
    # candidate = min(closest, squared distance to (c0, c1, c2)); returns its weighted sum.
    return lane_sum(weights, _nearer(points, c0, c1, c2, closest, candidate))


@njit(cache=True, nogil=True)
def _nearer(points, c0, c1, c2, closest, candidate):
    for i in range(points.shape[1]):
        d0 = points[0, i] - c0
        d1 = points[1, i] - c1
        d2 = points[2, i] - c2
        candidate[i] = min(closest[i], d0 * d0 + d1 * d1 + d2 * d2)
    return candidate


@njit(cache=True, nogil=True)
def lane_sum(weights, values):
    """Weighted sum in ``LANES`` running sums, point ``i`` in sum ``i % LANES``, then added in pairs.

    A single running sum waits for each addition before the next; four independent ones
    let the processor overlap them. The order is fixed, so the array kernels of
    `mpicolor.engine.gpu` can take the same sums.

    Parameters
    ----------
    weights : ndarray of shape (n,), float64
    values : ndarray of shape (n,), float32 or float64
        Each product is taken in float64.

    Returns
    -------
    float
    """
    s0 = s1 = s2 = s3 = 0.0
    n = weights.shape[0]
    whole = n - n % LANES
    for i in range(0, whole, LANES):
        s0 += weights[i] * values[i]
        s1 += weights[i + 1] * values[i + 1]
        s2 += weights[i + 2] * values[i + 2]
        s3 += weights[i + 3] * values[i + 3]
    if whole < n:
        s0 += weights[whole] * values[whole]
    if whole + 1 < n:
        s1 += weights[whole + 1] * values[whole + 1]
    if whole + 2 < n:
        s2 += weights[whole + 2] * values[whole + 2]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _pick_by_potential(cumulative, target):
    # First index whose cumulative potential exceeds target (binary search).
    low = 0
    high = cumulative.shape[0] - 1
    while low < high:
        middle = (low + high) // 2
        if cumulative[middle] > target:
            high = middle
        else:
            low = middle + 1
    return low


@njit(cache=True, nogil=True)
def kmeans_plusplus(points, weights, uniforms, centres, potential, closest, candidate, best_closest):
    """Greedy weighted k-means++ seeding, driven by given uniform numbers.

    Parameters
    ----------
    points : ndarray of shape (3, n_points), float32
    weights : ndarray of shape (n_points,), float64, all > 0
    uniforms : ndarray of shape (clusters, n_trials), float64 in [0, 1)
        Random numbers for the first centre (``uniforms[0, 0]``) and for the
        candidates of every later step; ``clusters <= n_points``.
    centres : ndarray of shape (clusters, 3), float64
        Filled with the seeds.
    potential : ndarray of shape (n_points,), float64
    closest, candidate, best_closest : ndarray of shape (n_points,), float32
        Work space: squared distances are float32, their weighted sums float64.
    """
    clusters, trials = uniforms.shape
    n = points.shape[1]
    running = 0.0
    for i in range(n):
        running += weights[i]
        potential[i] = running
    first = _pick_by_potential(potential, uniforms[0, 0] * potential[-1])
    for c in range(3):
        centres[0, c] = points[c, first]
    closest[:] = np.inf
    _closer_to(points, weights, points[0, first], points[1, first], points[2, first], closest, closest)
    for step in range(1, clusters):
        running = 0.0
        for i in range(n):
            running += weights[i] * closest[i]
            potential[i] = running
        best_potential = np.inf
        best_index = 0
        for trial in range(trials):
            index = _pick_by_potential(potential, uniforms[step, trial] * potential[-1])
            total = _closer_to(points, weights, points[0, index], points[1, index], points[2, index], closest,
                               candidate)
            if total < best_potential:
                best_potential = total
                best_index = index
                # keep the best trial's distances by swapping buffers instead of copying
                candidate, best_closest = best_closest, candidate
        for c in range(3):
            centres[step, c] = points[c, best_index]
        closest, best_closest = best_closest, closest


@njit(cache=True, nogil=True)
def _assign(points, centres, labels, distances):
    # Nearest centre of every point, the lowest index on ties; branch-free inner loop, in float32 (twice the
    # SIMD width of float64: up to 10% of the palette, none on the smallest frames; the same palettes on
    # every frame tried)
    distances[:] = np.inf
    for j in range(centres.shape[0]):
        c0 = np.float32(centres[j, 0])
        c1 = np.float32(centres[j, 1])
        c2 = np.float32(centres[j, 2])
        for i in range(points.shape[1]):
            d0 = points[0, i] - c0
            d1 = points[1, i] - c1
            d2 = points[2, i] - c2
            distance = d0 * d0 + d1 * d1 + d2 * d2
            closer = distance < distances[i]
            labels[i] = j if closer else labels[i]
            distances[i] = distance if closer else distances[i]


@njit(cache=True, nogil=True)
def lloyd(points, weights, moments, centres, max_iter, tol, labels, previous, distances):
    """Weighted Lloyd iterations until the centres settle.

    Stops as scikit-learn does: when no label changes, or when the summed squared
    centre shift is at most ``tol``. An emptied cluster moves to the point farthest
    from its centre. A centre is the sum of its points' ``moments`` over the sum of
    their weights, both exact, so it does not depend on the order of the sums; which
    is also why the sums can follow the points that change cluster instead of being
    taken again every iteration.

    Parameters
    ----------
    points : ndarray of shape (3, n_points), float32
    weights : ndarray of shape (n_points,), float64
        Whole numbers.
    moments : ndarray of shape (3, n_points), float64
        ``weights * points`` as whole numbers, so that centre sums are exact in any order (the
        array kernels of `mpicolor.engine.gpu` add them in another order and must get the same centres).
    centres : ndarray of shape (clusters, 3), float64
        Starting centres; updated in place. Distances are taken to them rounded to float32.
    max_iter : int
    tol : float
        Absolute tolerance on the summed squared centre shift.
    labels : ndarray of shape (n_points,), int64
        Filled with the nearest final centre of every point (lowest index on ties).
    previous : ndarray of shape (n_points,), int64
    distances : ndarray of shape (n_points,), float32
        Work space.

    Returns
    -------
    float
        The inertia: weighted sum of squared distances to the final centres.
    """
    n = points.shape[1]
    clusters = centres.shape[0]
    previous[:] = -1
    sums = np.zeros((clusters, 3), np.float64)
    mass = np.zeros(clusters, np.float64)
    settled = False
    for _ in range(max_iter):
        _assign(points, centres, labels, distances)
        changed = 0
        for i in range(n):
            j = labels[i]
            was = previous[i]
            if j != was:
                changed += 1
                previous[i] = j
                mass[j] += weights[i]
                for c in range(3):
                    sums[j, c] += moments[c, i]
                if was >= 0:
                    mass[was] -= weights[i]
                    for c in range(3):
                        sums[was, c] -= moments[c, i]
        if changed == 0:
            settled = True  # labels and distances are those of the final centres already
            break
        shift = 0.0
        for j in range(clusters):
            if mass[j] > 0.0:
                for c in range(3):
                    updated = sums[j, c] / mass[j]
                    shift += (updated - centres[j, c]) ** 2
                    centres[j, c] = updated
            else:
                far = np.argmax(distances)
                centres[j] = points[:, far]
                distances[far] = 0.0
                shift = np.inf
        if shift <= tol:
            break
    if not settled:
        _assign(points, centres, labels, distances)
    return _weighted_sum(weights, distances)


@njit(cache=True, nogil=True)
def kmeans_runs(points, weights, moments, uniforms, max_iter, tol):
    """Weighted k-means from several k-means++ seedings.

    Parameters
    ----------
    points : ndarray of shape (3, n_points), float32
    weights : ndarray of shape (n_points,), float64
    moments : ndarray of shape (3, n_points), float64
        As `lloyd`.
    uniforms : ndarray of shape (n_init, clusters, n_trials), float64 in [0, 1)
        Random numbers of every seeding (see `kmeans_plusplus`).
    max_iter : int
        Lloyd iterations per seeding at most.
    tol : float
        As `lloyd`.

    Returns
    -------
    centres : ndarray of shape (n_init, clusters, 3), float64
        Centres of every run after at most ``max_iter`` Lloyd iterations.
    inertia : ndarray of shape (n_init,), float64
        Weighted inertia of every run on ``points``.
    """
    runs, n = uniforms.shape[0], points.shape[1]
    centres = np.empty((runs, uniforms.shape[1], 3), np.float64)
    inertia = np.empty(runs, np.float64)
    potential = np.empty(n)
    work = np.empty((3, n), np.float32)
    labels, previous = np.empty(n, np.int64), np.empty(n, np.int64)
    for run in range(runs):
        kmeans_plusplus(points, weights, uniforms[run], centres[run], potential, work[0], work[1], work[2])
        inertia[run] = lloyd(points, weights, moments, centres[run], max_iter, tol, labels, previous, work[0])
    return centres, inertia


@njit(cache=True, nogil=True)
def lloyd_runs(points, weights, moments, centres, max_iter, tol):
    """`lloyd` from several starts on the same points.

    Parameters
    ----------
    points, weights, moments, max_iter, tol
        As `lloyd`.
    centres : ndarray of shape (n_runs, clusters, 3), float64
        Starting centres of every run; updated in place.

    Returns
    -------
    labels : ndarray of shape (n_runs, n_points), int64
    inertia : ndarray of shape (n_runs,), float64
    """
    n = points.shape[1]
    labels = np.empty((centres.shape[0], n), np.int64)
    inertia = np.empty(centres.shape[0], np.float64)
    previous, distances = np.empty(n, np.int64), np.empty(n, np.float32)
    for run in range(centres.shape[0]):
        inertia[run] = lloyd(points, weights, moments, centres[run], max_iter, tol, labels[run], previous, distances)
    return labels, inertia


@njit(cache=True, nogil=True)
def _level(points, weights, moments, level, sizes):
    # level `level` of `sample_levels`'s arrays, contiguous, its points in float32 as the k-means takes them
    size = sizes[level]
    return points[level, :, :size].astype(np.float32), weights[level, :size].copy(), moments[level, :, :size].copy()


@njit(cache=True, nogil=True)
def fast_search(image, rows, offsets, column_step, codes, bits, ups, fine, coarser, slots, seen, uniforms, clusters,
                details, tol, radius, scored, stages, max_iter, final_iter):
    """The fast k-means of one frame in one call, from its pixels to its centres and counts.

    The CPU twin of `mpicolor.engine.palette.plan_fast` then `solve_plans` on one frame, step for
    step, without the Python between the kernels (about a sixth of the palette on small frames):
    `sample_bins`; the restart and final levels (`sample_levels`), the exact colours when the final
    level has at most ``clusters`` points; the restarts (`kmeans_runs`) on the restart level, or on the
    final one when the restart level has fewer than ``clusters`` points; `distinct_runs`; each of
    ``stages`` runs the chosen centres its Lloyd iterations on the final level and keeps the
    best (lowest inertia, the first of equal ones); the winner converges there.

    Parameters
    ----------
    image, rows, offsets, column_step, bits, ups, fine, coarser
        As `sample_bins`; ``fine`` and ``coarser`` are all zero again on return.
    codes : ndarray of shape (sample size,), int32
        Work space of exactly the sample's size (`colour_histogram`).
    slots, seen
        Work space of `sample_levels`, all zero, left so.
    uniforms : ndarray of shape (restarts, clusters, trials), float64
        As `kmeans_runs`.
    clusters : int
    details : ndarray of shape (2,), float64
        Restart and final level thresholds over (mean channel variance of the bins) * (sampled pixels).
    tol : float
        Lloyd tolerance over the mean channel variance of the bins.
    radius : float
        Of `distinct_runs`.
    scored : int
        Distinct configurations ranked on the final level.
    stages : tuple of (keep, iterations)
        Ranking steps on the final level.
    max_iter, final_iter : int
        Lloyd iterations at most of the restarts, and of the winner on the final level.

    Returns
    -------
    rgb, shares
        As `sorted_colours` returns them: of the centres rounded, ``k = clusters``, and the sampled
        pixels nearest each; or of the sample's ``k <= clusters`` exact colours.
    """
    occupied, bins, variance = sample_bins(image, bits, rows, offsets, column_step, fine, ups, coarser, codes)
    scale = variance * codes.shape[0]
    thresholds = np.empty(2)
    thresholds[0] = details[0] * scale
    thresholds[1] = details[1] * scale
    points, weights, moments, sizes = sample_levels(codes, bins, occupied, bits, ups, coarser, thresholds, slots, seen)
    if sizes[1] <= clusters:
        # too few points for the clusters: the exact colours, or each colour its own cluster
        points, weights, moments, sizes = sample_levels(codes, bins, occupied, bits, ups, coarser, np.zeros(1), slots,
                                                        seen)
    clear_coarser(occupied, bits, ups, coarser)
    final = _level(points, weights, moments, sizes.shape[0] - 1, sizes)
    if sizes.shape[0] == 1 and sizes[0] <= clusters:
        exact_points, exact_weights, _ = final
        bgr = np.empty((exact_weights.shape[0], 3), np.uint8)
        for i in range(exact_weights.shape[0]):
            for c in range(3):
                bgr[i, c] = np.uint8(np.rint(exact_points[c, i]))
        return sorted_colours(bgr, exact_weights)
    # too few points for the clusters on the restart level: the restarts run on the final one
    restart = _level(points, weights, moments, 0, sizes) if sizes.shape[0] == 2 and sizes[0] >= clusters else final
    tol = tol * variance
    centres, inertia = kmeans_runs(restart[0], restart[1], restart[2], uniforms, max_iter, tol)
    chosen = centres[distinct_runs(centres, inertia, radius, scored)]
    # the restart level can rank configurations wrongly: they continue on the final level, a few
    # iterations at a time, and only the best of each step carry on
    for keep, iterations in stages:
        _, stepped = lloyd_runs(final[0], final[1], final[2], chosen, iterations, tol)
        chosen = chosen[np.argsort(stepped, kind="mergesort")[:keep]]
    labels, _ = lloyd_runs(final[0], final[1], final[2], chosen, final_iter, tol)
    counts = np.zeros(clusters)
    for i in range(labels.shape[1]):
        counts[labels[0, i]] += final[1][i]
    # means of colours lie in [0, 255]: rounding needs no clipping
    return sorted_colours(np.rint(chosen[0]).astype(np.uint8), counts)


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def _nearest(c0, c1, c2, colours):
    # squared distance from (c0, c1, c2) to the nearest of colours (n, 3)
    best = np.inf
    for j in range(colours.shape[0]):
        d0 = c0 - colours[j, 0]
        d1 = c1 - colours[j, 1]
        d2 = c2 - colours[j, 2]
        best = min(best, d0 * d0 + d1 * d1 + d2 * d2)
    return best


@njit(cache=True, nogil=True)
def _same_configuration(first, second, radius):
    # Every centre of each set within radius of some centre of the other (Hausdorff distance).
    squared = radius * radius
    for a, b in ((first, second), (second, first)):
        for i in range(a.shape[0]):
            if _nearest(a[i, 0], a[i, 1], a[i, 2], b) > squared:
                return False
    return True


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def palette_inertia(pixels, colours):
    """Sum of squared distances from every pixel to its nearest colour.

    Parameters
    ----------
    pixels : ndarray of shape (n_pixels, 3), uint8
    colours : ndarray of shape (clusters, 3), float64
        In the same channel order as ``pixels``.

    Returns
    -------
    float
        The inertia, accumulated in float64 in pixel order.
    """
    total = 0.0
    for i in range(pixels.shape[0]):
        total += _nearest(np.float64(pixels[i, 0]), np.float64(pixels[i, 1]), np.float64(pixels[i, 2]), colours)
    return total


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
    details = np.array([1e-3, 1e-4])
    details.setflags(write=False)
    fast_search(image, rows, offsets, 1, codes, 4, ups, table, coarser, np.zeros(1 << 12, np.int32), seen, uniforms, 2,
                details, 1e-4, 6.0, 2, ((2, 3), (1, 6)), 10, 10)
    palette_inertia(image.reshape(16, 3), centres[0])
    sorted_colours(np.zeros((2, 3), np.uint8), np.ones(2))
    return time.perf_counter() - start
