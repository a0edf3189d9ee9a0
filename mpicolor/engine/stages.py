"""The fast method's stages, written once: its settings, and the decisions both of its engines take.

``method="fast"`` solves the original's problem (k-means of every pixel, ``KMeans(n_init=5)``) on weighted colour
points cut from a sample of the frame, in these stages:

1. **Sample** (`mpicolor.engine.palette.sample_rows`): about one pixel in ``sample_fraction`` on a jittered grid,
   at least ``sample_min`` (or the whole frame) and at most ``sample_max``.
2. **Histogram** (`kernels.histogram.colour_histogram`): ``fine_bits`` per channel, per bin the count and the sums
   of B, G, R, so that each bin stands at its mean colour; the coarser bins of ``coarser_bits`` beside it.
3. **Levels** (`kernels.histogram.adaptive_levels`): a bin of width ``w`` holding ``n`` sampled pixels stands as
   one point while ``n w**2 <= detail * (sampled pixels) * (mean channel variance)``, else it splits into finer
   bins, and a heavy fine bin into its exact colours (`level_thresholds`). Two levels: the restart level
   (``restart_detail``) and the final level (``final_detail``). When the final level has at most ``clusters``
   points, the exact colours of the sample are the palette (`too_few_points`); when the restart level has fewer
   than ``clusters``, the restarts run on the final one (`restart_level`).
4. **Restarts**: ``restarts`` greedy k-means++ seedings (scikit-learn's, 3 candidates a step), each converged by
   Lloyd on the restart level (``max_iter`` iterations at most).
5. **Ranking**: runs whose centres all lie within ``same_configuration`` share a configuration; the best run of
   each of the ``scored`` best configurations continues on the final level, and each step of ``ranking`` runs
   them its Lloyd iterations there and keeps the best (`kept_runs`), down to two finalists.
6. **Effort**: when the sample cannot tell the two finalists apart to within the quality bar (`settled`: the
   standard error of their inertias' difference above ``unsettled_error`` of the inertia, and the difference
   within ``unsettled_gap`` standard errors), a finer final level is cut from the same histogram
   (``finer_detail``, `finer_threshold`) and both finalists converge on it; the lower inertia wins. A settled
   frame costs what it did before (one finalist converges, on the final level). When the frame's decode
   repeated its chroma over blocks (the run's fast decode of a 4:2:0 or 4:2:2 JPEG, `chroma_decides`), the
   original's pixels are not the sample's: every ``chroma_screen``-th sampled pixel is read again with its
   chroma interpolated (rebuilt from the neighbouring blocks, `kernels.chroma.smoothed_inertias`), and when that
   takes more than ``chroma_margin`` of the better finalist's lead away (`chroma_could_decide`), the whole sample
   so read decides between them (`kernels.chroma.finalist_inertias`).
7. **Winner**: the best converges on the final level, or on the finer one (``final_iter`` iterations at most);
   its centres rounded are the colours, and the sampled pixels nearest each their shares.

Lloyd stops as scikit-learn's does: no label change, or a summed squared centre shift of at most ``tol`` times the
mean channel variance of the fine bins (`lloyd_tolerance`).

Two engines take these stages. On a CPU, `kernels.search.fast_search` runs all of them for one frame in one numba
call; on a GPU rank, `mpicolor.engine.gpu.solve_plans` runs each stage for a batch of frames with array kernels
(CuPy, or NumPy in the tests, where it gives the CPU's palettes exactly). Both take their numbers from `FAST` and
their decisions from the functions below: numba functions, which Python calls as well. docs/palette-design.md
gives the measurements behind every number.
"""

import functools
from typing import NamedTuple

import numpy as np

from mpicolor.engine.jit import kernel


class FastSettings(NamedTuple):
    """The numbers of the fast method (see the stages above).

    A named tuple, so that the numba search takes it as one argument.
    """

    sample_fraction: int  # the sample is about one pixel in this many ...
    sample_min: int  # ... but at least this many pixels (or the whole frame) ...
    sample_max: int  # ... and at most this many (1080p: one in 15); keeps the histogram's int32 sums exact
    fine_bits: int  # bits per channel of the histogram, the finest bins before exact colours
    coarser_bits: tuple  # the coarser bins a point can stand for
    restart_detail: float  # the level the restarts converge on
    final_detail: float  # the level that ranks the configurations and gives the palette
    restarts: int  # k-means++ restarts
    same_configuration: float  # colour levels: runs whose centres are all this close share a configuration
    scored: int  # the best runs of this many distinct configurations are ranked on the final level ...
    ranking: tuple  # ... in these steps: (runs kept, Lloyd iterations before keeping them), down to the finalists
    unsettled_error: float  # finalists whose inertias' difference has a standard error above this share ...
    unsettled_gap: float  # ... and lies within this many standard errors are not settled by the sample ...
    finer_detail: float  # ... and converge on a level this fine
    chroma_screen: int  # with repeated chroma, every this many sampled pixels screen the finalists' interpolated ...
    chroma_margin: float  # ... chroma: the whole sample decides when the screen takes this share of the lead away
    max_iter: int  # Lloyd iterations of a restart at most, as scikit-learn
    final_iter: int  # Lloyd iterations of the winner at most: its colours are rounded to whole levels
    tol: float  # Lloyd stops at a centre shift of tol * mean channel variance, as scikit-learn


FAST = FastSettings(sample_fraction=8, sample_min=1 << 14, sample_max=9 << 14, fine_bits=6, coarser_bits=(5, 4, 3),
                    restart_detail=0.002, final_detail=0.002 / 32, restarts=16, same_configuration=6.0, scored=4,
                    ranking=((2, 3), (2, 6)), unsettled_error=5e-4, unsettled_gap=2.0, finer_detail=0.002 / 256,
                    chroma_screen=16, chroma_margin=1.0, max_iter=300, final_iter=20, tol=1e-4)
# bits fewer per channel of each coarser histogram than the fine one
COARSER_UPS = tuple(FAST.fine_bits - bits for bits in FAST.coarser_bits)


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


@functools.lru_cache(maxsize=8)
def restart_uniforms(seed, clusters):
    """The random numbers of the restarts' k-means++ seedings: the same for every frame of a run, drawn once.

    Returns
    -------
    ndarray of shape (FAST.restarts, clusters, trials), float64, read-only
        ``numpy.random.default_rng(seed)``'s uniforms; ``trials`` is `local_trials`.
    """
    uniforms = np.random.default_rng(seed).random((FAST.restarts, clusters, local_trials(clusters)))
    uniforms.setflags(write=False)
    return uniforms


@kernel
def level_thresholds(settings, variance, sample_size):
    """The thresholds of the restart and the final level: ``detail * sample_size * variance``.

    Returns
    -------
    ndarray of shape (2,), float64
    """
    return _thresholds((settings.restart_detail, settings.final_detail), variance * sample_size)


@kernel
def finer_threshold(settings, variance, sample_size):
    """The threshold of the finer final level of an unsettled frame, as `level_thresholds`.

    Returns
    -------
    ndarray of shape (1,), float64
    """
    return _thresholds((settings.finer_detail,), variance * sample_size)


@kernel
def _thresholds(details, scale):
    thresholds = np.empty(len(details))
    for k in range(len(details)):
        thresholds[k] = details[k] * scale
    return thresholds


@kernel
def lloyd_tolerance(settings, variance):
    """Lloyd's absolute tolerance on the summed squared centre shift."""
    return settings.tol * variance


@kernel
def too_few_points(final_size, clusters):
    """Whether the final level is too small for the clusters: the sample's exact colours are then the points."""
    return final_size <= clusters


@kernel
def restart_level(restart_size, clusters):
    """The level the restarts run on: 0, the restart level, unless it has fewer points than clusters (then 1)."""
    return 0 if restart_size >= clusters else 1


@kernel
def kept_runs(inertia, keep):
    """The ``keep`` runs of lowest inertia, lowest first, the first of equal ones first.

    Parameters
    ----------
    inertia : ndarray of shape (n_runs,), float64
    keep : int

    Returns
    -------
    ndarray of shape (min(keep, n_runs),), int64
    """
    return np.argsort(inertia, kind="mergesort")[:keep]


@kernel
def settled(points, weights, first, second, settings):
    """Whether the sample tells two finalist configurations apart well enough to keep the first without more effort.

    Per sampled pixel (a point stands for its weight in pixels) the difference of its squared distances to the
    nearest centre of each; the finalists are not settled when the standard error of the mean difference is above
    ``settings.unsettled_error`` of the first's inertia, and the mean difference lies within
    ``settings.unsettled_gap`` standard errors: the sample cannot then say which of the two is better to within
    the quality bar. Running sums in point order, so that every engine takes the same decision.

    Parameters
    ----------
    points : ndarray of shape (3, n_points), float32
        The final level's points, as the k-means takes them.
    weights : ndarray of shape (n_points,), float64
    first, second : ndarray of shape (clusters, 3), float64
        The finalists' centres, the first the better on the final level.
    settings : FastSettings

    Returns
    -------
    bool
    """
    differences = np.empty(points.shape[1])
    total = inertia = difference = 0.0
    for i in range(points.shape[1]):
        nearest_first = nearest_second = np.inf
        for j in range(first.shape[0]):
            to_first = to_second = 0.0
            for c in range(3):
                to_first += (np.float64(points[c, i]) - first[j, c]) ** 2
                to_second += (np.float64(points[c, i]) - second[j, c]) ** 2
            nearest_first = min(nearest_first, to_first)
            nearest_second = min(nearest_second, to_second)
        differences[i] = nearest_second - nearest_first
        total += weights[i]
        inertia += weights[i] * nearest_first
        difference += weights[i] * differences[i]
    if inertia == 0.0:
        return True
    mean = difference / total
    spread = 0.0
    for i in range(points.shape[1]):
        spread += weights[i] * (differences[i] - mean) ** 2
    error = np.sqrt(spread / total / total) / (inertia / total)
    return not (error > settings.unsettled_error and mean / (inertia / total) < settings.unsettled_gap * error)


@kernel
def chroma_decides(finalists, chroma_rows, chroma_columns):
    """Whether an unsettled frame's finalists are compared on the sample's pixels with interpolated chroma.

    When the frame's decode repeated its chroma over blocks (``chroma_rows`` x ``chroma_columns`` > 1) and two
    finalists converged on the finer level: the original's pixels interpolate the chroma, and on thin saturated
    lines and edges the two decodes rank close configurations differently
    (`mpicolor.engine.kernels.chroma.smoothed_inertias`).
    """
    return finalists > 1 and chroma_rows * chroma_columns > 1


@kernel
def chroma_could_decide(inertias, screened, settings):
    """Whether the screen of interpolated chroma (every ``settings.chroma_screen``-th sampled pixel) takes more than
    ``settings.chroma_margin`` of the lead of the better of two finalists away: then the whole sample decides."""
    lead = abs(inertias[1] - inertias[0])
    winner = 0 if inertias[0] <= inertias[1] else 1
    screened_lead = screened[1 - winner] - screened[winner]
    return lead - screened_lead > settings.chroma_margin * lead
