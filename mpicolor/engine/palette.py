"""The dominant colours of one frame: the original k-means ("seed") and its fast twin."""

import dataclasses
import functools
import threading
import warnings
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from mpicolor.engine import kernels
from mpicolor.engine.decode import DEFAULT_MAX_PIXELS, BadFrame, decode_frame

__all__ = ["ENGINES", "METHODS", "BadFrame", "Palette", "default_scale", "extract_palette",
           "palette_from_bytes", "smooth_chroma"]

METHODS = ("fast", "seed")
# The version of each method's computation, bumped when its palettes change for the same settings: a
# resumed run computes again the stored results of another version, so that no tarball mixes two.
# (0.1.0 stored none: its methods were version 1.)
ENGINES = {"fast": 3, "seed": 1}

# Fast method settings, chosen by the measurements in docs/palette-design.md.
SAMPLE_FRACTION = 8  # the sample is a grid of about one pixel in SAMPLE_FRACTION ...
SAMPLE_MIN = 1 << 14  # ... but at least this many pixels (or the whole frame) ...
SAMPLE_MAX = 9 << 14  # ... and at most this many (1080p: one in 15); keeps int32 sums exact
FINE_BITS = 6  # colour bins of 4 levels per channel, the finest before exact colours
COARSER_BITS = (5, 4, 3)  # the coarser bins a point can stand for (8, 16 and 32 levels per channel)
# A bin of width w holding n sampled pixels stands as one point while n * w**2 <= DETAIL *
# (sampled pixels) * (mean channel variance), else it splits (adaptive_level).
RESTART_DETAIL = 0.002  # the level the restarts converge on
FINAL_DETAIL = 0.002 / 32  # the level that ranks the candidates and gives the palette
RESTARTS = 16  # k-means++ restarts, each converged on the restart level
SAME_CONFIGURATION = 6.0  # colour levels: runs whose centres are all this close share a configuration
SCORED = 4  # the best runs of this many distinct configurations are scored ...
SCORE_ITER = 3  # ... after this many Lloyd iterations on the ranking level ...
CANDIDATES = 2  # ... the best of them ranked there ...
RANK_ITER = 6  # ... after this many more; the winner then converges
MAX_ITER = 300  # Lloyd iterations at most, as scikit-learn
FINAL_ITER = 20  # Lloyd iterations of the winner at most: its colours are rounded to whole levels
TOL = 1e-4  # Lloyd stops at a centre shift of TOL * mean channel variance, as scikit-learn
STAGES = ((CANDIDATES, SCORE_ITER), (1, RANK_ITER))  # the ranking steps on the final level: (kept, iterations)


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
    frames, beyond the 0.3% quality bar (docs/palette-design.md).

    Parameters
    ----------
    method : {"fast", "seed"}

    Returns
    -------
    int
        A scale accepted by `mpicolor.engine.decode.decode_frame`.
    """
    _check_method(method)
    return 1


def smooth_chroma(method):
    """Whether `palette_from_bytes` decodes ``method``'s frames with interpolated chroma.

    ``"seed"`` decodes as OpenCV does, the original's pixels; ``"fast"`` repeats the chroma
    samples (libjpeg-turbo's ``fastupsample``), about 15% of a 4:2:0 decode saved at no cost
    in quality (docs/palette-design.md). libjpeg-turbo's faster IDCT (``fastdct``) is not
    used: it raised the median inertia on every set.

    Parameters
    ----------
    method : {"fast", "seed"}

    Returns
    -------
    bool
        The ``smooth_chroma`` argument of `mpicolor.engine.decode.decode_frame`.
    """
    _check_method(method)
    return method == "seed"


def palette_from_bytes(frame_bytes, clusters=5, method="fast", seed=0, scale=None,
                       max_pixels=DEFAULT_MAX_PIXELS):
    """Palette of an encoded frame: what the MPI run computes per frame.

    Exactly ``extract_palette(decode_frame(frame_bytes, max_pixels, scale,
    smooth_chroma(method)), clusters, method, seed)``.

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
    image = decode_frame(frame_bytes, max_pixels=max_pixels, scale=scale, smooth_chroma=smooth_chroma(method))
    return extract_palette(image, clusters, method, seed)


def extract_palette(image, clusters=5, method="fast", seed=0):
    """Dominant colours of an image by k-means on its pixels.

    ``"seed"`` is the original computation: scikit-learn ``KMeans(clusters, n_init=5,
    random_state=seed)`` on every pixel as float32, colours truncated with ``int()``,
    shares from the label counts. ``"fast"`` solves the same problem on a colour
    histogram of a sample of the pixels (`sample_rows`: about one in ``SAMPLE_FRACTION``
    on a jittered grid, at most ``SAMPLE_MAX``), binned at ``FINE_BITS`` per channel with
    per-bin sums, so that each bin stands at its mean colour. Two levels of weighted
    points are cut from the histogram (`kernels.adaptive_levels`): a bin stands as one
    point while it is light, and splits into finer bins, then into its exact colours,
    while it is heavy; ``RESTART_DETAIL`` and ``FINAL_DETAIL`` set how light.

    - ``RESTARTS`` k-means++ restarts converge on the restart level.
    - The best run of each of the ``SCORED`` best configurations (runs whose centres all
      lie within ``SAME_CONFIGURATION`` share one) runs ``SCORE_ITER`` Lloyd iterations on
      the final level, the ``CANDIDATES`` best of those ``RANK_ITER`` more, and the lowest
      inertia there converges (``FINAL_ITER`` iterations at most).

    On the CPU all of it is one numba call (`kernels.fast_search`).

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
        BGR pixels, as `mpicolor.engine.decode.decode_frame` returns.
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
        rgb, shares = _sorted_colours(*seed_colours(image, int(clusters), int(seed)))
    else:
        rgb, shares = _fast_palette(image, int(clusters), int(seed))
    return _palette(rgb, shares, int(clusters))


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
    """All-zero histogram tables and work space kept between frames, one set per thread.

    A fresh 4 MB table per frame costs about 0.2 ms of page faults, a third of the
    sample pass; each user clears the rows it filled.
    """

    def __init__(self):
        self.fine = np.zeros((1 << (3 * FINE_BITS), 4), np.int32)
        rows = kernels.coarser_rows(FINE_BITS, [FINE_BITS - bits for bits in COARSER_BITS])
        self.coarser = np.zeros((rows, 4), np.int32)
        self.seen = np.zeros(rows, np.uint8)
        self.slots = np.zeros(1 << (3 * FINE_BITS), np.int32)
        self.sampled = np.empty(0, np.int32)

    def codes(self, size):
        if self.sampled.size < size:
            self.sampled = np.empty(size, np.int32)
        return self.sampled


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
    """What the fast k-means of one frame runs: its levels, the restarts' random numbers, the tolerance.

    Built by `plan_fast` from the frame's colour levels, run by `solve_plans` with the array kernels of
    `mpicolor.engine.gpu`; `kernels.fast_search` takes the same steps for one frame on the CPU.

    Attributes
    ----------
    levels : tuple of two Level
        Restarts converge on the first; the best runs of distinct configurations are ranked on
        the second, where the winner converges (the two may be one).
    uniforms : ndarray of shape (RESTARTS, clusters, trials), float64, or None
        Random numbers of the k-means++ restarts; None when the frame has at most ``clusters``
        colours, each then its own cluster (``levels`` holds the exact colours alone).
    tol : float
        Absolute Lloyd tolerance: ``TOL`` times the mean channel variance of the fine bins.
    """

    levels: tuple
    uniforms: np.ndarray | None
    tol: float


@functools.lru_cache(maxsize=32)
def sample_rows(height, width):
    """The pixels the fast method samples: about one in ``SAMPLE_FRACTION``, on a jittered grid.

    At least ``SAMPLE_MIN`` pixels (or all of a smaller frame) and at most ``SAMPLE_MAX``. The
    frame is cut into bands of ``row_step`` rows; each band gives one row, and that row every
    ``column_step``-th pixel from an offset, row and offset drawn per band by a fixed hash. A
    regular grid would see the same place of every 8x8 codec block, or of a resampling pattern,
    and video has both: on real frames that moved a sample's inertia by 2% where the jittered
    grid moves it as much as a random sample does.

    Returns
    -------
    rows, offsets : ndarray of shape (n_rows,), int64, read-only
        Sampled rows, and the first sampled column of each.
    column_step : int
    size : int
        Pixels in the sample.
    """
    pixels = height * width
    target = min(pixels, max(SAMPLE_MIN, min(SAMPLE_MAX, pixels // SAMPLE_FRACTION)))
    row_step = min(height, max(1, round((pixels / target / 2) ** 0.5)))
    column_step = min(width, -(-pixels // (target * row_step)))
    bands = np.arange(-(-height // row_step), dtype=np.uint64)
    hashed = (bands * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    rows = (bands * np.uint64(row_step) + hashed % np.minimum(row_step, height - bands * np.uint64(row_step)))
    while True:
        offsets = ((hashed >> np.uint64(16)) % np.uint64(column_step)).astype(np.int64)
        size = int((-(-(width - offsets) // column_step)).sum())
        if size <= SAMPLE_MAX:
            break
        column_step += 1
    rows = rows.astype(np.int64)
    rows.setflags(write=False)
    offsets.setflags(write=False)
    return rows, offsets, column_step, size


@functools.lru_cache(maxsize=32)
def sample_indices(height, width):
    """Flat pixel indices of `sample_rows`, in sample order: ``image.reshape(-1, 3)[indices]`` is the sample.

    Returns
    -------
    ndarray of shape (size,), int64, read-only
    """
    rows, offsets, column_step, _ = sample_rows(height, width)
    indices = np.concatenate([row * width + np.arange(offset, width, column_step)
                              for row, offset in zip(rows, offsets)])
    indices.setflags(write=False)
    return indices


def plan_fast(levels_at, clusters, seed, variance, sample_size):
    """Choose the levels of a frame's fast k-means.

    Parameters
    ----------
    levels_at : callable
        ``levels_at(thresholds)`` returns a `Level` of `kernels.adaptive_levels` per threshold; a
        threshold of 0 gives every exact colour of the sample.
    clusters, seed : int
    variance : float
        Mean channel variance of the fine bins (`kernels.histogram_variance`).
    sample_size : int
        Pixels in the sample.

    Returns
    -------
    FastPlan
    """
    scale = variance * sample_size
    restart, final = levels_at([RESTART_DETAIL * scale, FINAL_DETAIL * scale])
    if final.size <= clusters:
        # too few points for the clusters: the exact colours, or each colour its own cluster
        (final,) = levels_at([0.0])
        if final.size <= clusters:
            return FastPlan((final, final), None, 0.0)
        restart = final
    # too few points for the clusters on the restart level: the restarts run on the final one
    restart = restart if restart.size >= clusters else final
    return FastPlan((restart, final), _restart_uniforms(seed, clusters), TOL * variance)


@functools.lru_cache(maxsize=8)
def _restart_uniforms(seed, clusters):
    # the same for every frame of a run: drawn once, read-only
    uniforms = np.random.default_rng(seed).random((RESTARTS, clusters, kernels.local_trials(clusters)))
    uniforms.setflags(write=False)
    return uniforms


def solve_plans(plans, clusters, engine):
    """Run the fast k-means of several frames, stage by stage, so that an engine can batch each stage.

    ``RESTARTS`` k-means++ restarts converge on ``levels[0]``; the best run of each of the
    ``SCORED`` best configurations runs ``SCORE_ITER`` Lloyd iterations on ``levels[1]``, the
    ``CANDIDATES`` best of those ``RANK_ITER`` more, and the best of those converges there
    (``FINAL_ITER`` more at most).

    Parameters
    ----------
    plans : list of FastPlan
    clusters : int
    engine
        Runs the heavy parts on its arrays: ``probe(tasks, max_iter)`` with tasks ``(level,
        uniforms, tol)`` returns per task the centres (restarts, clusters, 3) and inertias
        (restarts,) of k-means++ then Lloyd (``max_iter`` iterations at most); ``converge(tasks,
        max_iter)`` with tasks ``(level, centres, tol)`` returns per task ``(centres, labels,
        inertia)`` after at most ``max_iter`` Lloyd iterations from the given centres;
        ``counts(level, labels, clusters)`` the weight per label; ``to_host(array)`` a NumPy
        array. Centres and inertias are NumPy values.

    Returns
    -------
    list of (ndarray of shape (k, 3), uint8, ndarray of shape (k,), float64)
        Per plan, the rounded BGR centres and the sampled pixels nearest each.
    """
    probed = [plan for plan in plans if plan.uniforms is not None]
    runs = engine.probe([(plan.levels[0], plan.uniforms, plan.tol) for plan in probed], MAX_ITER)
    chosen = [(p, centres) for p, (run_centres, inertia) in enumerate(runs)
              for centres in run_centres[kernels.distinct_runs(run_centres, inertia, SAME_CONFIGURATION, SCORED)]]
    # the restart level can rank configurations wrongly: they continue on the final level, a few
    # iterations at a time, and only the best of each step carry on
    for keep, iterations in STAGES:
        stepped = engine.converge([(probed[p].levels[1], centres, probed[p].tol) for p, centres in chosen], iterations)
        chosen = _best_of_each(chosen, stepped, keep)
    winners = engine.converge([(probed[p].levels[1], centres, probed[p].tol) for p, centres in chosen], FINAL_ITER)
    solved, won = [], iter(winners)
    for plan in plans:
        if plan.uniforms is None:
            exact = plan.levels[-1]
            solved.append((np.rint(engine.to_host(exact.points).T).astype(np.uint8), engine.to_host(exact.weights)))
        else:
            centres, labels, _ = next(won)
            # means of colours lie in [0, 255]: rounding needs no clipping
            solved.append((np.rint(centres).astype(np.uint8), engine.counts(plan.levels[-1], labels, clusters)))
    return solved


def _best_of_each(chosen, stepped, keep):
    # per plan, the `keep` lowest inertias of `stepped`, the first of equal ones first, in plan order
    ranked = sorted(range(len(chosen)), key=lambda index: (chosen[index][0], stepped[index][2], index))
    kept, taken = [], {}
    for index in ranked:
        plan = chosen[index][0]
        if taken.get(plan, 0) < keep:
            taken[plan] = taken.get(plan, 0) + 1
            kept.append((plan, stepped[index][0]))
    return kept


_UPS = tuple(FINE_BITS - bits for bits in COARSER_BITS)
_DETAILS = np.array([RESTART_DETAIL, FINAL_DETAIL])
_DETAILS.setflags(write=False)


def _fast_palette(image, clusters, seed):
    # `plan_fast` then `solve_plans` as one numba call: the Python between the kernels was a sixth of
    # the palette on small frames
    rows, offsets, column_step, size = sample_rows(*image.shape[:2])
    return kernels.fast_search(image, rows, offsets, column_step, _WORK.codes(size)[:size], FINE_BITS, _UPS,
                               _WORK.fine, _WORK.coarser, _WORK.slots, _WORK.seen, _restart_uniforms(seed, clusters),
                               clusters, _DETAILS, TOL, SAME_CONFIGURATION, SCORED, STAGES, MAX_ITER, FINAL_ITER)


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
    return _palette(*_sorted_colours(bgr, counts), clusters)


def _sorted_colours(bgr, counts):
    # `kernels.sorted_colours` of any centres and counts: one call, where NumPy's sort and its
    # temporaries cost tens of microseconds of cold caches after the k-means
    return kernels.sorted_colours(np.ascontiguousarray(bgr, np.uint8), np.ascontiguousarray(counts, np.float64))


def _palette(rgb, shares, clusters):
    # the Palette of sorted colours, with spare rows when fewer than clusters
    spare = clusters - len(rgb)
    if spare > 0:
        warnings.warn(f"image has {len(rgb)} distinct colours, fewer than clusters={clusters}; "
                      "the spare rows repeat the last colour with share 0", stacklevel=3)
        rgb = np.concatenate([rgb, np.repeat(rgb[-1:], spare, axis=0)])
        shares = np.concatenate([shares, np.zeros(spare)])
    return Palette(rgb=rgb, shares=shares)
