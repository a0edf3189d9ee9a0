"""The sample's colour histogram and the levels of weighted points cut from it.

A sample of the frame's pixels (`colour_histogram`) is binned at ``bits`` per channel with per-bin sums, merged
into coarser bins (`gather_bins`), and its heavy bins split into their exact colours (`exact_colours`); then
`adaptive_levels` cuts levels of points whose resolution follows the mass. Bins are numbered in Morton order
(`colour_bins`).
"""

import numpy as np

from mpicolor.engine.jit import kernel


def _spread_bits():
    # bit k of a byte moved to bit 3 * k
    return np.array([sum(((value >> k) & 1) << (3 * k) for k in range(8)) for value in range(256)], np.int64)


SPREAD = _spread_bits()


def colour_bins(channels, bits, xp=np):
    """The bins of colours with ``bits`` per channel: their bits interleaved (Morton order), B highest.

    Interleaved bin numbers put similar colours in nearby bins, so that a frame's histogram touches few cache
    lines, and make the bin of fewer bits holding a bin a shift: ``colour_bins(channels, bits) >> 3 * d`` is the
    bin with ``d`` bits fewer per channel. `colour_histogram` numbers its bins so; the array kernels of
    `mpicolor.engine.gpu` bin with this function.

    Parameters
    ----------
    channels : array of shape (n, 3), integer
        B, G, R of each colour, 0..255.
    bits : int
        Bits kept per channel, 1..8.
    xp : module, default numpy
        The array namespace of ``channels`` (``numpy`` or ``cupy``).

    Returns
    -------
    array of shape (n,), int64
    """
    shift = 8 - bits
    spread = xp.asarray(SPREAD)
    b, g, r = (spread[channels[:, c] >> shift] for c in range(3))
    return (b << 2) | (g << 1) | r


@kernel
def _channel_of_bin(index, channel):
    # the bits of one channel (0: B, 1: G, 2: R) of an interleaved bin number
    value = 0
    index >>= 2 - channel
    for k in range(8):
        value |= ((index >> (3 * k)) & 1) << k
    return value


@kernel
def colour_histogram(image, bits, rows, offsets, column_step, table, codes):
    """Quantise a sample of the pixels and sum them per colour bin.

    The sample is every ``column_step``-th pixel from ``offsets[k]`` of row ``rows[k]``.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
        BGR pixels.
    bits : int
        Bits kept per channel, 1..8: pixel ``(b, g, r)`` falls in bin
        ``colour_bins(pixels, bits)``.
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


@kernel
def _bases(bits, ups):
    # first row in `coarser` (see `gather_bins`) of each histogram of `ups`
    bases = np.zeros(len(ups), np.int64)
    for k in range(1, len(ups)):
        bases[k] = bases[k - 1] + (1 << (3 * (bits - ups[k - 1])))
    return bases


@kernel
def gather_bins(table, occupied, bits, ups, coarser):
    """The occupied rows of a histogram, in the order of ``occupied``, the table all zero again, and
    the bins merged into bins of fewer bits per channel, in the same pass.

    Later passes then read the bins in order instead of across the 4 MB table.

    Parameters
    ----------
    table : ndarray of shape (n_bins, 4), int32
        As `colour_histogram` fills it.
    occupied : ndarray of shape (n_occupied,), int64
        Its occupied bin numbers (`colour_bins`), with ``bits`` per channel.
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


@kernel
def clear_coarser(occupied, bits, ups, coarser):
    """Zero what `gather_bins` filled, so that the table can serve the next frame."""
    bases = _bases(bits, ups)
    for j in occupied:
        for k in range(len(ups)):
            row = bases[k] + (j >> (3 * ups[k]))
            for c in range(4):
                coarser[row, c] = 0


@kernel
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


@kernel
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


@kernel
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


@kernel
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


@kernel
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


@kernel
def sample_levels(codes, bins, occupied, bits, ups, coarser, thresholds, slots, seen):
    """`heavy_bins` at the smallest threshold, `exact_colours` of those, `adaptive_levels`, in one call."""
    heavy, exact_slot = heavy_bins(bins, occupied, bits, thresholds.min())
    exact_points, exact_weights, offsets = exact_colours(codes, bits, heavy, slots,
                                                         np.zeros(heavy.shape[0] << (3 * (8 - bits)), np.int32))
    return adaptive_levels(bins, occupied, bits, ups, coarser, thresholds, exact_slot, exact_points, exact_weights,
                           offsets, seen)


