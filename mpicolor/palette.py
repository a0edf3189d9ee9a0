"""The dominant colours of one frame: the original k-means ("seed") and its fast twin."""

import dataclasses
import threading
import warnings
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from mpicolor import kernels
from mpicolor.decode import DEFAULT_MAX_PIXELS, BadFrame, decode_frame

__all__ = ["METHODS", "BadFrame", "Palette", "default_scale", "extract_palette",
           "palette_from_bytes"]

METHODS = ("fast", "seed")

# Fast method settings, chosen by the measurements in notes/palette-results.md.
SAMPLE_PIXELS = 1 << 17  # pixels sampled per frame at most (whole rows); keeps int32 sums exact
FINE_BITS = 6  # colour bins of 4 levels per channel
DIRECT_BINS = 4096  # a frame with more occupied fine bins is "busy", otherwise "flat"
# Flat frames: restarts on the fine bins, the best carried to the exact colours.
N_INIT = 64  # k-means++ restarts at most ...
N_INIT_MIN = 8  # ... and at least, within
RESTART_POINTS = 1 << 14  # restarts x occupied bins
N_REFINED = 4  # best restarts run to convergence
# Busy frames: restarts on coarse bins, the best carried to finer ones.
COARSE_BITS = (4, 5)  # bits per channel of the restart level and of the next
N_INIT_COARSE = 8
N_REFINED_COARSE = 2
PROBE_ITER = 5  # Lloyd iterations of every restart before the best are kept
MAX_ITER = 300  # Lloyd iterations at most, as scikit-learn
TOL = 1e-4  # Lloyd stops at a centre shift of TOL * mean channel variance, as scikit-learn


@dataclasses.dataclass(frozen=True, eq=False)
class Palette:
    """Dominant colours of a frame, largest share first.

    Attributes
    ----------
    rgb : ndarray of shape (clusters, 3), uint8
        Colours as R, G, B, read-only.
    shares : ndarray of shape (clusters,), float64
        Fraction of the pixels nearest each colour; sums to 1, read-only.
    """

    rgb: np.ndarray
    shares: np.ndarray

    def __post_init__(self):
        for array in (self.rgb, self.shares):
            array.setflags(write=False)

    @property
    def packed(self):
        """ndarray of shape (clusters,), int64: ``R << 16 | G << 8 | B``, the original's encoding."""
        rgb = self.rgb.astype(np.int64)
        return rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]

    def __eq__(self, other):
        if not isinstance(other, Palette):
            return NotImplemented
        return np.array_equal(self.rgb, other.rgb) and np.array_equal(self.shares, other.shares)


def default_scale(method):
    """Decode scale `palette_from_bytes` uses for ``method`` when given none.

    Both methods decode at full size: a reduced JPEG decode smooths fine texture and
    moved the fast palette's inertia up to 1.5% above the original's on detailed 1080p
    frames, beyond the 0.3% quality bar (notes/palette-results.md).

    Parameters
    ----------
    method : {"fast", "seed"}

    Returns
    -------
    int
        A scale accepted by `mpicolor.decode.decode_frame`.
    """
    _check_method(method)
    return 1


def palette_from_bytes(frame_bytes, clusters=5, method="fast", seed=0, scale=None,
                       max_pixels=DEFAULT_MAX_PIXELS):
    """Palette of an encoded frame: what the MPI run computes per frame.

    Exactly ``extract_palette(decode_frame(frame_bytes, max_pixels, scale), clusters,
    method, seed)``.

    Parameters
    ----------
    frame_bytes : bytes-like
        JPEG or PNG data.
    clusters, method, seed
        As `extract_palette`.
    scale : {None, 1, 2, 4, 8}, default None
        Decode scale; None uses ``default_scale(method)``.
    max_pixels : int, default 50_000_000
        Largest frame accepted, checked from the header.

    Returns
    -------
    Palette

    Raises
    ------
    BadFrame
        The bytes are not a whole decodable image of at most ``max_pixels``.
    """
    if scale is None:
        scale = default_scale(method)
    image = decode_frame(frame_bytes, max_pixels=max_pixels, scale=scale)
    return extract_palette(image, clusters, method, seed)


def extract_palette(image, clusters=5, method="fast", seed=0):
    """Dominant colours of an image by k-means on its pixels.

    ``"seed"`` is the original computation: scikit-learn ``KMeans(clusters, n_init=5,
    random_state=seed)`` on every pixel as float32, colours truncated with ``int()``,
    shares from the label counts. ``"fast"`` solves the same problem on a colour
    histogram: whole rows of the image, at most ``SAMPLE_PIXELS`` pixels, are binned
    at ``FINE_BITS`` per channel with per-bin sums, so that each bin stands at its
    mean colour, and weighted k-means runs on the bins:

    - flat frames (at most ``DIRECT_BINS`` occupied bins) run ``N_INIT_MIN`` to
      ``N_INIT`` k-means++ restarts on the bins; the ``N_REFINED`` best after
      ``PROBE_ITER`` Lloyd iterations converge on the bins, then on the exact colours
      of the sample, and the lowest inertia there wins;
    - busy frames run ``N_INIT_COARSE`` restarts on 4-bit bins; the
      ``N_REFINED_COARSE`` best converge on 4-bit then 5-bit bins, and the one with
      the lowest inertia there converges on the fine bins.

    Colours are the winning centres rounded to the nearest integer; shares are the
    sampled pixels nearest each centre.

    When ``"fast"`` finds at most ``clusters`` distinct colours in its sample (or
    ``"seed"`` fewer pixels than ``clusters``), each colour is its own cluster, the spare rows repeat
    the last real colour with share 0 and a `UserWarning` says so. ``"seed"`` on more
    pixels than clusters but fewer distinct colours keeps scikit-learn's answer:
    duplicate centres, some with share 0, and its `ConvergenceWarning`.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
        BGR pixels, as `mpicolor.decode.decode_frame` returns.
    clusters : int, default 5
        Number of colours, >= 1.
    method : {"fast", "seed"}, default "fast"
    seed : int, default 0
        Seed of the k-means++ restarts; the same image and seed give the same
        palette in every process and at any thread count.

    Returns
    -------
    Palette
        ``clusters`` rows sorted by share, largest first; equal shares by packed
        colour, smallest first.
    """
    check_image(image)
    check_settings(clusters, method, seed)
    if method == "seed":
        bgr, counts = seed_colours(image, int(clusters), int(seed))
    else:
        bgr, counts = _fast_palette(image, int(clusters), int(seed))
    return sorted_palette(bgr, counts, int(clusters))


def check_settings(clusters, method, seed):
    """Refuse settings `extract_palette` cannot use, with a message naming the value and the rule."""
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) or clusters < 1:
        raise ValueError(f"clusters={clusters!r} should be an int >= 1")
    _check_method(method)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r} should be an int in [0, 2**32)")


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method={method!r} should be one of {', '.join(map(repr, METHODS))}")


def check_image(image):
    """Refuse anything but a non-empty uint8 array of shape (height, width, 3)."""
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] != 3 or image.size == 0):
        described = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                     else type(image).__name__)
        raise ValueError("image should be a non-empty uint8 array of shape (height, width, 3), "
                         f"got {described}")


def seed_colours(image, clusters, seed, kmeans=None):
    """BGR centres and label counts of ``KMeans(clusters, n_init=5)`` on every pixel as float32.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
    clusters, seed : int
    kmeans : class, default None
        scikit-learn's ``KMeans`` when None, or one with its interface (cuML's, on a GPU rank).

    Returns
    -------
    bgr : ndarray of shape (k, 3), uint8
        The centres truncated as the original's ``int()`` did.
    counts : ndarray of shape (k,), int64
    """
    pixels = image.reshape(-1, 3).astype(np.float32)
    if len(pixels) < clusters:
        # KMeans refuses fewer samples than clusters; each colour is then its own cluster.
        distinct, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        return distinct, counts
    if kmeans is None:
        # Imported here: scikit-learn costs ~1 s to import and only the reference needs it.
        from sklearn.cluster import KMeans as kmeans
    with threadpool_limits(1):
        # n_init given explicitly: its default changed across releases (scikit-learn and cuML)
        fitted = kmeans(n_clusters=clusters, n_init=5, random_state=seed).fit(pixels)
    counts = np.bincount(np.asarray(fitted.labels_), minlength=clusters)
    return np.trunc(np.asarray(fitted.cluster_centers_)).astype(np.uint8), counts


class _WorkTables(threading.local):
    """All-zero histogram tables kept between frames, one set per thread.

    A fresh 4 MB table per frame costs about 0.2 ms of page faults, a third of the
    sample pass; each user clears the rows it filled.
    """

    def __init__(self):
        self.bins = {}
        self.cells = np.zeros(DIRECT_BINS << (3 * (8 - FINE_BITS)), np.int32)

    def table(self, bits):
        if bits not in self.bins:
            self.bins[bits] = np.zeros((1 << (3 * bits), 4), np.int32)
        return self.bins[bits]


_WORK = _WorkTables()


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
    """What the fast k-means of one frame runs: the stages, the restarts' random numbers, the tolerance.

    Built by `plan_fast` from the frame's colour levels, run by `solve_plans`; the same for the numba
    kernels here and for the array kernels of `mpicolor.gpu`.

    Attributes
    ----------
    levels : list of Level
        Restarts run on ``levels[0]``; candidates converge on ``levels[:ranked]`` in turn, the
        lowest inertia on ``levels[ranked - 1]`` wins and converges on ``levels[ranked:]``.
    uniforms : ndarray of shape (restarts, clusters, trials), float64, or None
        Random numbers of the k-means++ restarts; None when the frame has at most ``clusters``
        colours, each then its own cluster (``levels`` holds the exact colours alone).
    refined, ranked : int
    tol : float
        Absolute Lloyd tolerance: ``TOL`` times the mean channel variance of the fine bins.
    """

    levels: list
    uniforms: np.ndarray | None
    refined: int
    ranked: int
    tol: float


def sample_steps(height, width):
    """Row and column steps of the pixel sample of the fast method: at most ``SAMPLE_PIXELS``, whole rows first.

    Returns
    -------
    row_step, column_step : int
    """
    step = -(-height * width // SAMPLE_PIXELS)
    row_step = min(step, height)
    return row_step, -(-step // row_step)


def plan_fast(fine, coarse, exact, clusters, seed, tol):
    """Choose the stages of a frame's fast k-means from its fine bins.

    Parameters
    ----------
    fine : Level
        The ``FINE_BITS`` bins, in the order the sample first reaches them.
    coarse : callable
        ``coarse(bits)`` returns the `Level` of ``bits`` per channel; called for busy frames only.
    exact : callable
        ``exact()`` returns the `Level` of the exact colours; called for flat frames only.
    clusters, seed : int
    tol : float
        Lloyd tolerance (see `FastPlan`).

    Returns
    -------
    FastPlan
    """
    if fine.size > DIRECT_BINS:
        # Busy frames: restarts on coarse bins, where fewer points make them cheap;
        # the best runs settle on finer bins.
        levels = [level for level in map(coarse, COARSE_BITS) if level.size >= clusters] + [fine]
        restarts, refined = N_INIT_COARSE, N_REFINED_COARSE
        # The fine bins only polish the winner: they are many, and rank runs as 5-bit ones do.
        ranked = max(1, len(levels) - 1)
    else:
        # Flat frames: competing optima that only fine bins tell apart (many
        # restarts), and bins wide against the colour spread (exact colours last).
        exact_level = exact()
        if exact_level.size <= clusters:
            return FastPlan([exact_level], None, 0, 0, tol)
        levels = [fine, exact_level] if fine.size > clusters else [exact_level]
        restarts = max(N_INIT_MIN, min(N_INIT, RESTART_POINTS // fine.size))
        refined = N_REFINED
        ranked = len(levels)
    uniforms = np.random.default_rng(seed).random((restarts, clusters, kernels.local_trials(clusters)))
    return FastPlan(levels, uniforms, refined, ranked, tol)


def solve_plans(plans, clusters, engine):
    """Run the fast k-means of several frames, stage by stage, so that an engine can batch each stage.

    Parameters
    ----------
    plans : list of FastPlan
    clusters : int
    engine
        Runs the heavy parts on its arrays: ``probe(tasks, max_iter)`` with tasks ``(level,
        uniforms, tol)`` returns per task the centres (restarts, clusters, 3) and inertias
        (restarts,) of k-means++ then ``max_iter`` Lloyd iterations; ``converge(tasks,
        max_iter)`` with tasks ``(level, centres, tol)`` returns per task ``(centres, labels,
        inertia)`` after Lloyd to convergence; ``counts(level, labels, clusters)`` the weight
        per label; ``to_host(array)`` a NumPy array. Centres and inertias are NumPy values.

    Returns
    -------
    list of (ndarray of shape (k, 3), uint8, ndarray of shape (k,), float64)
        Per plan, the rounded BGR centres and the sampled pixels nearest each.
    """
    probed = [index for index, plan in enumerate(plans) if plan.uniforms is not None]
    results = engine.probe([(plans[index].levels[0], plans[index].uniforms, plans[index].tol)
                            for index in probed], PROBE_ITER)
    candidates = [_Candidate(plans[index], runs[run].copy())
                  for index, (runs, inertia) in zip(probed, results)
                  for run in np.argsort(inertia, kind="stable")[:plans[index].refined]]
    _converge(candidates, engine, lambda plan, depth: depth < plan.ranked)
    winners = {}
    for candidate in candidates:
        # the first of equal inertias wins, as in a loop over the candidates in probe order
        key = id(candidate.plan)
        if key not in winners or candidate.inertia < winners[key].inertia:
            winners[key] = candidate
    _converge(list(winners.values()), engine, lambda plan, depth: plan.ranked <= depth < len(plan.levels))
    solved = []
    for plan in plans:
        if plan.uniforms is None:
            exact = plan.levels[0]
            solved.append((np.rint(engine.to_host(exact.points).T).astype(np.uint8), engine.to_host(exact.weights)))
        else:
            winner = winners[id(plan)]
            solved.append((np.clip(np.rint(winner.centres), 0, 255).astype(np.uint8),
                           engine.counts(plan.levels[-1], winner.labels, clusters)))
    return solved


@dataclasses.dataclass
class _Candidate:
    """A run of `solve_plans` on its way: the centres after its last level, the labels and inertia there."""

    plan: FastPlan
    centres: np.ndarray
    labels: object = None
    inertia: float = np.inf


def _converge(candidates, engine, runs_at):
    # Lloyd to convergence, level by level, for the candidates whose plan runs at that depth.
    for depth in range(max((len(c.plan.levels) for c in candidates), default=0)):
        active = [c for c in candidates if runs_at(c.plan, depth)]
        if not active:
            continue
        results = engine.converge([(c.plan.levels[depth], c.centres, c.plan.tol) for c in active], MAX_ITER)
        for candidate, (centres, labels, inertia) in zip(active, results):
            candidate.centres, candidate.labels, candidate.inertia = centres, labels, inertia


class _NumbaEngine:
    """The heavy parts of `solve_plans` as the numba kernels, one task after the other."""

    @staticmethod
    def probe(tasks, max_iter):
        return [kernels.kmeans_runs(*level, uniforms, max_iter, tol) for level, uniforms, tol in tasks]

    @staticmethod
    def converge(tasks, max_iter):
        results = []
        for level, centres, tol in tasks:
            centres = centres.copy()
            labels, inertia = kernels.lloyd(*level, centres, max_iter, tol)
            results.append((centres, labels, inertia))
        return results

    @staticmethod
    def counts(level, labels, clusters):
        return np.bincount(labels, weights=level.weights, minlength=clusters)

    @staticmethod
    def to_host(array):
        return array


def _coarse_bins(fine, occupied, bits):
    coarse = _WORK.table(bits)
    coarse_occupied = kernels.coarsen(fine, occupied, FINE_BITS, bits, coarse)
    try:
        return Level(*kernels.occupied_bins(coarse, coarse_occupied))
    finally:
        kernels.clear_rows(coarse, coarse_occupied)


def _fast_palette(image, clusters, seed):
    row_step, column_step = sample_steps(*image.shape[:2])
    table = _WORK.table(FINE_BITS)
    occupied = kernels.colour_histogram(image, FINE_BITS, row_step, column_step, table)
    try:
        fine = Level(*kernels.occupied_bins(table, occupied))
        plan = plan_fast(
            fine, lambda bits: _coarse_bins(table, occupied, bits),
            lambda: Level(*kernels.exact_colours(image, FINE_BITS, row_step, column_step, table, occupied,
                                                 _WORK.cells)),
            clusters, seed, TOL * kernels.mean_variance(fine.points, fine.weights))
    finally:
        kernels.clear_rows(table, occupied)
    return solve_plans([plan], clusters, _NumbaEngine)[0]


def sorted_palette(bgr, counts, clusters):
    """The `Palette` of k-means centres: RGB sorted by share, spare rows when fewer than ``clusters``.

    Parameters
    ----------
    bgr : ndarray of shape (k, 3), uint8
        Centres, ``k <= clusters``.
    counts : array-like of shape (k,)
        Pixels nearest each centre.
    clusters : int

    Returns
    -------
    Palette
    """
    shares = np.asarray(counts, np.float64) / np.sum(counts)
    rgb = np.ascontiguousarray(bgr[:, ::-1])
    packed = rgb.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    order = np.lexsort((packed, -shares))
    rgb, shares = rgb[order], shares[order]
    spare = clusters - len(rgb)
    if spare > 0:
        warnings.warn(f"image has {len(rgb)} distinct colours, fewer than clusters={clusters}; "
                      "the spare rows repeat the last colour with share 0", stacklevel=3)
        rgb = np.concatenate([rgb, np.repeat(rgb[-1:], spare, axis=0)])
        shares = np.concatenate([shares, np.zeros(spare)])
    return Palette(rgb=rgb, shares=shares)
