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


@njit(cache=True, nogil=True)
def colour_histogram(image, bits, row_step, column_step, table):
    """Quantise a sample of the pixels and sum them per colour bin.

    The sample is every ``column_step``-th pixel of every ``row_step``-th row: whole
    rows keep the memory read proportional to the sample, not to the image.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
        BGR pixels.
    bits : int
        Bits kept per channel, 1..8: pixel ``(b, g, r)`` falls in bin
        ``(b >> s) << 2 * bits | (g >> s) << bits | (r >> s)`` with ``s = 8 - bits``.
    row_step, column_step : int
        Sampling steps, >= 1; the caller keeps the sample below 2 ** 31 / 255 pixels
        so that the int32 sums cannot overflow.
    table : ndarray of shape (2 ** (3 * bits), 4), int32, all zero
        Filled with, per bin, the sampled pixel count, then the sums of B, G and R.

    Returns
    -------
    occupied : ndarray of shape (n_occupied,), int64
        Indices of the non-empty bins in the order the sample first reached them, so
        that later passes, and `clear_rows`, skip the empty ones.
    """
    shift = 8 - bits
    rows = (image.shape[0] + row_step - 1) // row_step
    columns = (image.shape[1] + column_step - 1) // column_step
    occupied = np.empty(min(table.shape[0], rows * columns), np.int64)
    found = 0
    for y in range(0, image.shape[0], row_step):
        for x in range(0, image.shape[1], column_step):
            b = np.int32(image[y, x, 0])
            g = np.int32(image[y, x, 1])
            r = np.int32(image[y, x, 2])
            index = ((b >> shift) << (2 * bits)) | ((g >> shift) << bits) | (r >> shift)
            if table[index, 0] == 0:
                occupied[found] = index
                found += 1
            table[index, 0] += 1
            table[index, 1] += b
            table[index, 2] += g
            table[index, 3] += r
    return occupied[:found]


@njit(cache=True, nogil=True)
def coarsen(table, occupied, bits, coarse_bits, coarse):
    """Merge the bins of a colour histogram into bins of fewer bits per channel.

    Parameters
    ----------
    table : ndarray of shape (2 ** (3 * bits), 4), int32
    occupied : ndarray of shape (n_occupied,), int64
        As returned by `colour_histogram` with ``bits``.
    bits, coarse_bits : int
        Bits per channel of ``table`` and of ``coarse``, ``coarse_bits <= bits``.
    coarse : ndarray of shape (2 ** (3 * coarse_bits), 4), int32, all zero
        Filled as `colour_histogram` fills its table.

    Returns
    -------
    coarse_occupied : ndarray of shape (n_coarse_occupied,), int64
        Non-empty coarse bins, in the order of ``occupied``.
    """
    drop = bits - coarse_bits
    mask = (1 << bits) - 1
    coarse_occupied = np.empty(occupied.shape[0], np.int64)
    found = 0
    for j in occupied:
        b = (j >> (2 * bits)) >> drop
        g = ((j >> bits) & mask) >> drop
        r = (j & mask) >> drop
        index = (b << (2 * coarse_bits)) | (g << coarse_bits) | r
        if coarse[index, 0] == 0:
            coarse_occupied[found] = index
            found += 1
        for c in range(4):
            coarse[index, c] += table[j, c]
    return coarse_occupied[:found]


@njit(cache=True, nogil=True)
def clear_rows(table, occupied):
    """Zero the occupied rows of a table, so that it can serve the next frame.

    Parameters
    ----------
    table : ndarray of shape (n_bins, 4), int32
    occupied : ndarray of shape (n_occupied,), int64
    """
    for j in occupied:
        table[j, :] = 0


@njit(cache=True, nogil=True)
def occupied_bins(table, occupied):
    """Mean colour, pixel count and colour sums of every non-empty bin.

    Parameters
    ----------
    table : ndarray of shape (n_bins, 4), int32
    occupied : ndarray of shape (n_occupied,), int64
        As returned by `colour_histogram` or `coarsen`.

    Returns
    -------
    points : ndarray of shape (3, n_occupied), float64
        Mean B, G and R of each occupied bin, channel-major so that distance loops
        vectorise.
    weights : ndarray of shape (n_occupied,), float64
        Pixel count of each occupied bin.
    moments : ndarray of shape (3, n_occupied), float64
        Sums of B, G and R of each occupied bin: whole numbers, so that the centre
        sums of `lloyd` are exact in any order (the array kernels of
        `mpicolor.gpu` add them in another order and must get the same centres).
    """
    points = np.empty((3, occupied.shape[0]), np.float64)
    weights = np.empty(occupied.shape[0], np.float64)
    moments = np.empty((3, occupied.shape[0]), np.float64)
    for row in range(occupied.shape[0]):
        count = table[occupied[row], 0]
        weights[row] = count
        for c in range(3):
            moments[c, row] = table[occupied[row], c + 1]
            points[c, row] = table[occupied[row], c + 1] / count
    return points, weights, moments


@njit(cache=True, nogil=True)
def exact_colours(image, bits, row_step, column_step, table, occupied, counts):
    """Every distinct colour of the sample, with its pixel count.

    A second pass over the sample of `colour_histogram` that counts exact colours
    inside its occupied bins only, so memory follows the number of occupied bins
    rather than 2 ** 24 colours.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
    bits, row_step, column_step : int
        As given to `colour_histogram`.
    table : ndarray of shape (2 ** (3 * bits), 4), int32
        Its table; the counts column is overwritten with bin slot numbers.
    occupied : ndarray of shape (n_occupied,), int64
        Its occupied bins.
    counts : ndarray of shape (>= n_occupied * 2 ** (3 * (8 - bits)),), int32, all zero
        Work space, left all zero again.

    Returns
    -------
    points : ndarray of shape (3, n_colours), float64
        B, G and R of each distinct colour, channel-major.
    weights : ndarray of shape (n_colours,), float64
        Sampled pixel count of each colour.
    moments : ndarray of shape (3, n_colours), float64
        ``points * weights``, whole numbers (see `occupied_bins`).
    """
    shift = 8 - bits
    mask = (1 << shift) - 1
    cells = 1 << (3 * shift)
    for slot in range(occupied.shape[0]):
        table[occupied[slot], 0] = slot
    distinct = 0
    for y in range(0, image.shape[0], row_step):
        for x in range(0, image.shape[1], column_step):
            b = np.int64(image[y, x, 0])
            g = np.int64(image[y, x, 1])
            r = np.int64(image[y, x, 2])
            index = ((b >> shift) << (2 * bits)) | ((g >> shift) << bits) | (r >> shift)
            cell = table[index, 0] * cells + (((b & mask) << (2 * shift)) | ((g & mask) << shift) | (r & mask))
            if counts[cell] == 0:
                distinct += 1
            counts[cell] += 1
    points = np.empty((3, distinct), np.float64)
    weights = np.empty(distinct, np.float64)
    row = 0
    for slot in range(occupied.shape[0]):
        j = occupied[slot]
        base_b = (j >> (2 * bits)) << shift
        base_g = ((j >> bits) & ((1 << bits) - 1)) << shift
        base_r = (j & ((1 << bits) - 1)) << shift
        for cell in range(cells):
            count = counts[slot * cells + cell]
            counts[slot * cells + cell] = 0
            if count > 0:
                points[0, row] = base_b + (cell >> (2 * shift))
                points[1, row] = base_g + ((cell >> shift) & mask)
                points[2, row] = base_r + (cell & mask)
                weights[row] = count
                row += 1
    return points, weights, points * weights


@njit(cache=True, nogil=True)
def _weighted_sum(weights, values):
    # A plain loop, not np.dot: BLAS may split the sum by thread count.
    total = 0.0
    for i in range(weights.shape[0]):
        total += weights[i] * values[i]
    return total


@njit(cache=True, nogil=True)
def mean_variance(points, weights):
    """Weighted variance of each channel, averaged over the channels.

    Parameters
    ----------
    points : ndarray of shape (3, n_points), float64
    weights : ndarray of shape (n_points,), float64

    Returns
    -------
    float
        scikit-learn's scale for the k-means tolerance.
    """
    total = weights.sum()
    variance = 0.0
    for c in range(3):
        mean = _weighted_sum(weights, points[c]) / total
        spread = 0.0
        for i in range(weights.shape[0]):
            spread += weights[i] * (points[c, i] - mean) ** 2
        variance += spread / total
    return variance / 3.0


@njit(cache=True, nogil=True)
def _closer_to(points, weights, centre, closest, candidate):
    # candidate = min(closest, squared distance to centre); returns its weighted sum.
    total = 0.0
    for i in range(points.shape[1]):
        d0 = points[0, i] - centre[0]
        d1 = points[1, i] - centre[1]
        d2 = points[2, i] - centre[2]
        distance = min(closest[i], d0 * d0 + d1 * d1 + d2 * d2)
        candidate[i] = distance
        total += weights[i] * distance
    return total


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
def kmeans_plusplus(points, weights, uniforms):
    """Greedy weighted k-means++ seeding, driven by given uniform numbers.

    Parameters
    ----------
    points : ndarray of shape (3, n_points), float64
    weights : ndarray of shape (n_points,), float64, all > 0
    uniforms : ndarray of shape (clusters, n_trials), float64 in [0, 1)
        Random numbers for the first centre (``uniforms[0, 0]``) and for the
        candidates of every later step; ``clusters <= n_points``.

    Returns
    -------
    centres : ndarray of shape (clusters, 3), float64
    """
    clusters, trials = uniforms.shape
    centres = np.empty((clusters, 3), np.float64)
    cumulative = np.cumsum(weights)
    first = _pick_by_potential(cumulative, uniforms[0, 0] * cumulative[-1])
    centres[0] = points[:, first]
    closest = np.full(points.shape[1], np.inf)
    candidate = np.empty_like(closest)
    _closer_to(points, weights, centres[0].copy(), closest, closest)
    best_closest = np.empty_like(closest)
    for step in range(1, clusters):
        potential = np.cumsum(weights * closest)
        best_potential = np.inf
        best_index = 0
        for trial in range(trials):
            index = _pick_by_potential(potential, uniforms[step, trial] * potential[-1])
            total = _closer_to(points, weights, points[:, index].copy(), closest, candidate)
            if total < best_potential:
                best_potential = total
                best_index = index
                best_closest[:] = candidate
        centres[step] = points[:, best_index]
        closest[:] = best_closest
    return centres


@njit(cache=True, nogil=True)
def _assign(points, centres, labels, distances):
    # Nearest centre of every point, the lowest index on ties; branch-free inner loop.
    distances[:] = np.inf
    for j in range(centres.shape[0]):
        c0 = centres[j, 0]
        c1 = centres[j, 1]
        c2 = centres[j, 2]
        for i in range(points.shape[1]):
            d0 = points[0, i] - c0
            d1 = points[1, i] - c1
            d2 = points[2, i] - c2
            distance = d0 * d0 + d1 * d1 + d2 * d2
            closer = distance < distances[i]
            labels[i] = j if closer else labels[i]
            distances[i] = distance if closer else distances[i]


@njit(cache=True, nogil=True)
def lloyd(points, weights, moments, centres, max_iter, tol):
    """Weighted Lloyd iterations until the centres settle.

    Stops as scikit-learn does: when no label changes, or when the summed squared
    centre shift is at most ``tol``. An emptied cluster moves to the point farthest
    from its centre. A centre is the sum of its points' ``moments`` over the sum of
    their weights, both exact, so it does not depend on the order of the sums.

    Parameters
    ----------
    points : ndarray of shape (3, n_points), float64
    weights : ndarray of shape (n_points,), float64
    moments : ndarray of shape (3, n_points), float64
        ``weights * points`` as whole numbers (see `occupied_bins`).
    centres : ndarray of shape (clusters, 3), float64
        Starting centres; updated in place.
    max_iter : int
    tol : float
        Absolute tolerance on the summed squared centre shift.

    Returns
    -------
    labels : ndarray of shape (n_points,), int64
        Nearest final centre of every point (lowest index on ties).
    inertia : float
        Weighted sum of squared distances to the final centres.
    """
    n = points.shape[1]
    clusters = centres.shape[0]
    labels = np.zeros(n, np.int64)
    previous = np.full(n, -1, np.int64)
    distances = np.empty(n, np.float64)
    sums = np.empty((clusters, 3), np.float64)
    mass = np.empty(clusters, np.float64)
    for _ in range(max_iter):
        _assign(points, centres, labels, distances)
        sums[:] = 0.0
        mass[:] = 0.0
        changed = 0
        for i in range(n):
            j = labels[i]
            if j != previous[i]:
                changed += 1
                previous[i] = j
            mass[j] += weights[i]
            for c in range(3):
                sums[j, c] += moments[c, i]
        if changed == 0:
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
    _assign(points, centres, labels, distances)
    return labels, _weighted_sum(weights, distances)


@njit(cache=True, nogil=True)
def kmeans_runs(points, weights, moments, uniforms, max_iter, tol):
    """Weighted k-means from several k-means++ seedings.

    Parameters
    ----------
    points : ndarray of shape (3, n_points), float64
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
    runs = uniforms.shape[0]
    centres = np.empty((runs, uniforms.shape[1], 3), np.float64)
    inertia = np.empty(runs, np.float64)
    for run in range(runs):
        centres[run] = kmeans_plusplus(points, weights, uniforms[run])
        _, inertia[run] = lloyd(points, weights, moments, centres[run], max_iter, tol)
    return centres, inertia


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
        best = np.inf
        for j in range(colours.shape[0]):
            d0 = pixels[i, 0] - colours[j, 0]
            d1 = pixels[i, 1] - colours[j, 1]
            d2 = pixels[i, 2] - colours[j, 2]
            distance = d0 * d0 + d1 * d1 + d2 * d2
            if distance < best:
                best = distance
        total += best
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
    occupied = colour_histogram(image, 4, 1, 1, table)
    coarse = np.zeros((1 << 9, 4), np.int32)
    points, weights, moments = occupied_bins(coarse, coarsen(table, occupied, 4, 3, coarse))
    exact_colours(image, 4, 1, 1, table, occupied, np.zeros(occupied.size << 12, np.int32))
    clear_rows(table, occupied)
    uniforms = np.zeros((1, 2, local_trials(2)), np.float64)
    centres, _ = kmeans_runs(points, weights, moments, uniforms, 10, 0.0)
    lloyd(points, weights, moments, centres[0], 10, mean_variance(points, weights))
    palette_inertia(image.reshape(16, 3), centres[0])
    return time.perf_counter() - start
