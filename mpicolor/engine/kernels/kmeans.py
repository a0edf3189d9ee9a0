"""Weighted k-means on a level's points: k-means++ seeding, Lloyd iterations, and the inertia of a palette.

Deterministic at any thread count: no BLAS, no ``parallel=True``; every sum whose order could matter is a loop in
a fixed order, which the array kernels of `mpicolor.engine.gpu` take the same way.
"""

import numpy as np

from mpicolor.engine.jit import kernel

LANES = 4  # running sums of `lane_sum`


@kernel
def _weighted_sum(weights, values):
    # A plain loop, not np.dot: BLAS may split the sum by thread count.
    total = 0.0
    for i in range(weights.shape[0]):
        total += weights[i] * values[i]
    return total


@kernel
def _closer_to(points, weights, c0, c1, c2, closest, candidate):
    # candidate = min(closest, squared distance to (c0, c1, c2)); returns its weighted sum.
    return lane_sum(weights, _nearer(points, c0, c1, c2, closest, candidate))


@kernel
def _nearer(points, c0, c1, c2, closest, candidate):
    for i in range(points.shape[1]):
        d0 = points[0, i] - c0
        d1 = points[1, i] - c1
        d2 = points[2, i] - c2
        candidate[i] = min(closest[i], d0 * d0 + d1 * d1 + d2 * d2)
    return candidate


@kernel
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


@kernel
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


@kernel
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


@kernel
def _assign(points, centres, labels, distances):
    # Nearest centre of every point, the lowest index on ties; a branch-free inner loop in float32, twice the
    # SIMD width of float64 (docs/palette-design.md, issue 12's third round)
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


@kernel
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


@kernel
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


@kernel
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


@kernel
def _nearest(c0, c1, c2, colours):
    # squared distance from (c0, c1, c2) to the nearest of colours (n, 3)
    best = np.inf
    for j in range(colours.shape[0]):
        d0 = c0 - colours[j, 0]
        d1 = c1 - colours[j, 1]
        d2 = c2 - colours[j, 2]
        best = min(best, d0 * d0 + d1 * d1 + d2 * d2)
    return best


@kernel
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


