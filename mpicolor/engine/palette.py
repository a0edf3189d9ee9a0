"""The dominant colours of one frame: the original k-means ("seed") and its fast twin."""

import dataclasses
import functools
import threading
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from mpicolor.engine.decode import DEFAULT_MAX_PIXELS, BadFrame, decode_frame, repeated_chroma
from mpicolor.engine.kernels import histogram, search
from mpicolor.engine.stages import COARSER_UPS, FAST, restart_uniforms

__all__ = ["ENGINE_VERSIONS", "METHODS", "BadFrame", "Palette", "check_chroma_block", "default_scale",
           "extract_palette", "palette_from_bytes", "smooth_chroma"]

METHODS = ("fast", "seed")
# The version of each method's computation, bumped when its palettes change for the same settings: a
# resumed run computes again the stored results of another version, so that no tarball mixes two.
# (0.1.0 stored none: its methods were version 1.) Checkpoints store it as the tarball's ``engine``.
ENGINE_VERSIONS = {"fast": 5, "seed": 1}


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

    Exactly ``extract_palette(decode_frame(frame_bytes, max_pixels, scale, smooth_chroma(method)),
    clusters, method, seed, repeated_chroma(frame_bytes, scale, smooth_chroma(method)))``.

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
    smooth = smooth_chroma(method)
    image = decode_frame(frame_bytes, max_pixels=max_pixels, scale=scale, smooth_chroma=smooth)
    return extract_palette(image, clusters, method, seed, repeated_chroma(frame_bytes, scale, smooth))


def extract_palette(image, clusters=5, method="fast", seed=0, chroma_block=(1, 1)):
    """Dominant colours of an image by k-means on its pixels.

    ``"seed"`` is the original computation: scikit-learn ``KMeans(clusters, n_init=5,
    random_state=seed)`` on every pixel as float32, colours truncated with ``int()``,
    shares from the label counts. ``"fast"`` solves the same problem on weighted colour
    points cut from a sample of the pixels, in the stages of `mpicolor.engine.stages` (on
    the CPU one numba call, `kernels.search.fast_search`): colours are the winning centres
    rounded to the nearest integer, shares the sampled pixels nearest each. When the image's
    chroma was repeated over blocks (``chroma_block``), a frame whose two finalists the sample
    does not settle compares them on the sample with the chroma interpolated, as the original's
    decode has it (`mpicolor.engine.stages.chroma_decides`).

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
    chroma_block : (int, int), default (1, 1)
        Rows and columns of the blocks over which the image's decode repeated each chroma
        sample (`mpicolor.engine.decode.repeated_chroma`), each 1 or 2; ``(1, 1)``: every
        pixel has its own. ``"seed"`` ignores it.

    Returns
    -------
    Palette
        ``clusters`` rows sorted by share, largest first; equal shares by packed
        colour, smallest first.
    """
    check_image(image)
    check_settings(clusters, method, seed)
    chroma_rows, chroma_columns = check_chroma_block(chroma_block)
    if method == "seed":
        rgb, shares = _sorted_colours(*seed_colours(image, int(clusters), int(seed)))
    else:
        rgb, shares = _fast_palette(image, int(clusters), int(seed), chroma_rows, chroma_columns)
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
        self.fine = np.zeros((1 << (3 * FAST.fine_bits), 4), np.int32)
        rows = histogram.coarser_rows(FAST.fine_bits, COARSER_UPS)
        self.coarser = np.zeros((rows, 4), np.int32)
        self.seen = np.zeros(rows, np.uint8)
        self.slots = np.zeros(1 << (3 * FAST.fine_bits), np.int32)
        self.sampled = np.empty(0, np.int32)

    def codes(self, size):
        if self.sampled.size < size:
            self.sampled = np.empty(size, np.int32)
        return self.sampled


_WORK = _WorkTables()


@functools.lru_cache(maxsize=32)
def sample_rows(height, width):
    """The pixels the fast method samples: about one in ``FAST.sample_fraction``, on a jittered grid.

    At least ``FAST.sample_min`` pixels (or all of a smaller frame) and at most ``FAST.sample_max``. The
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
    target = min(pixels, max(FAST.sample_min, min(FAST.sample_max, pixels // FAST.sample_fraction)))
    row_step = min(height, max(1, round((pixels / target / 2) ** 0.5)))
    column_step = min(width, -(-pixels // (target * row_step)))
    bands = np.arange(-(-height // row_step), dtype=np.uint64)
    hashed = (bands * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    rows = (bands * np.uint64(row_step) + hashed % np.minimum(row_step, height - bands * np.uint64(row_step)))
    while True:
        offsets = ((hashed >> np.uint64(16)) % np.uint64(column_step)).astype(np.int64)
        size = int((-(-(width - offsets) // column_step)).sum())
        if size <= FAST.sample_max:
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


def check_chroma_block(chroma_block):
    """``(rows, columns)`` as ints, or a ValueError naming the value: each should be 1 or 2."""
    try:
        rows, columns = chroma_block
    except (TypeError, ValueError):
        rows = columns = None
    if rows not in (1, 2) or columns not in (1, 2):
        raise ValueError(f"chroma_block={chroma_block!r} should be (rows, columns), each 1 or 2")
    return int(rows), int(columns)


def _fast_palette(image, clusters, seed, chroma_rows=1, chroma_columns=1):
    rows, offsets, column_step, size = sample_rows(*image.shape[:2])
    return search.fast_search(image, rows, offsets, column_step, _WORK.codes(size)[:size], COARSER_UPS, _WORK.fine,
                              _WORK.coarser, _WORK.slots, _WORK.seen, restart_uniforms(seed, clusters), clusters, FAST,
                              chroma_rows, chroma_columns)


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
    # `kernels.search.sorted_colours` of any centres and counts: one call, where NumPy's sort and its
    # temporaries cost tens of microseconds of cold caches after the k-means
    return search.sorted_colours(np.ascontiguousarray(bgr, np.uint8), np.ascontiguousarray(counts, np.float64))


def _palette(rgb, shares, clusters):
    # the Palette of sorted colours, with spare rows when fewer than clusters
    spare = clusters - len(rgb)
    if spare > 0:
        warnings.warn(f"image has {len(rgb)} distinct colours, fewer than clusters={clusters}; "
                      "the spare rows repeat the last colour with share 0", stacklevel=3)
        rgb = np.concatenate([rgb, np.repeat(rgb[-1:], spare, axis=0)])
        shares = np.concatenate([shares, np.zeros(spare)])
    return Palette(rgb=rgb, shares=shares)
