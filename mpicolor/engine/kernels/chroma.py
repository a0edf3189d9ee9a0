"""The sample's pixels with interpolated chroma, rebuilt from a decode that repeated it, and a palette's inertia there.

The fast decode repeats each chroma sample of a subsampled JPEG over its block (libjpeg-turbo's ``fastupsample``);
the original's decode (OpenCV) interpolates it (libjpeg's "fancy upsampling": 9/16 of the pixel's own sample, 3/16
of each of its two nearer neighbours' across the block's edges, 1/16 of the diagonal one). Each pixel of the fast
decode is its own luma plus its block's chroma, so the chroma of a neighbouring block is read from any pixel of that
block, and a pixel with interpolated chroma is the fast pixel plus the colour of the chroma it lacks. Rebuilt this
way, a pixel is within a level or two of OpenCV's (rounding, and clipping at the ends of the range).
"""

import numpy as np

from mpicolor.engine.jit import kernel
from mpicolor.engine.kernels.kmeans import _nearest
from mpicolor.engine.stages import chroma_could_decide, chroma_decides

# JFIF: chroma of a B, G, R pixel (without its offset of 128), and the B, G, R of a chroma difference
_CB = (0.5, -0.331264, -0.168736)
_CR = (-0.081312, -0.418688, 0.5)
_FROM_CB = (1.772, -0.344136, 0.0)
_FROM_CR = (0.0, -0.714136, 1.402)


@kernel
def _chroma(image, y, x):
    # (Cb, Cr) less 128 of one B, G, R pixel
    b, g, r = np.float64(image[y, x, 0]), np.float64(image[y, x, 1]), np.float64(image[y, x, 2])
    return _CB[0] * b + _CB[1] * g + _CB[2] * r, _CR[0] * b + _CR[1] * g + _CR[2] * r


@kernel
def _across(position, block, size):
    # the nearest position of the neighbouring chroma block nearer to `position` (itself at the frame's edge, where
    # libjpeg repeats the edge's sample); blocks of 1 or 2
    if block == 1:
        return position
    if position & 1 == 0:
        return position - 1 if position > 0 else position
    return position + 1 if position + 1 < size else position


@kernel
def chroma_shift(image, y, x, chroma_rows, chroma_columns):
    """How the chroma of one pixel of ``image`` (B, G, R, chroma repeated in blocks of ``chroma_rows`` x
    ``chroma_columns``) moves when it is interpolated as libjpeg's fancy upsampling does: (dCb, dCr)."""
    y_near, x_near = _across(y, chroma_rows, image.shape[0]), _across(x, chroma_columns, image.shape[1])
    cb, cr = _chroma(image, y, x)
    cb_row, cr_row = _chroma(image, y, x_near)
    cb_column, cr_column = _chroma(image, y_near, x)
    if chroma_rows == 2 and chroma_columns == 2:
        cb_corner, cr_corner = _chroma(image, y_near, x_near)
        return ((3.0 * (cb_row - cb) + 3.0 * (cb_column - cb) + (cb_corner - cb)) / 16.0,
                (3.0 * (cr_row - cr) + 3.0 * (cr_column - cr) + (cr_corner - cr)) / 16.0)
    # one direction only (4:2:2, 4:4:0): 3/4 of its own sample, 1/4 of the nearer neighbour's
    return ((cb_row - cb) + (cb_column - cb)) / 4.0, ((cr_row - cr) + (cr_column - cr)) / 4.0


@kernel
def smoothed_pixel(image, y, x, chroma_rows, chroma_columns, out):
    """One pixel of ``image`` with its chroma interpolated (`chroma_shift`), written to ``out`` (shape (3,),
    float64)."""
    d_cb, d_cr = chroma_shift(image, y, x, chroma_rows, chroma_columns)
    for c in range(3):
        value = np.float64(image[y, x, c]) + _FROM_CB[c] * d_cb + _FROM_CR[c] * d_cr
        out[c] = min(255.0, max(0.0, value))


@kernel
def finalist_inertias(image, rows, offsets, column_step, chroma_rows, chroma_columns, finalists, inertias, settings):
    """The inertias an unsettled frame's winner is chosen by (stage 6 of `mpicolor.engine.stages`).

    Parameters
    ----------
    image, rows, offsets, column_step, chroma_rows, chroma_columns
        As `smoothed_inertias`.
    finalists : ndarray of shape (n_finalists, clusters, 3), float64
        Centres as B, G, R, converged on the level the winner is chosen on.
    inertias : ndarray of shape (n_finalists,), float64
        Their inertias there.
    settings : FastSettings

    Returns
    -------
    ndarray of shape (n_finalists,), float64
        ``inertias``, or their inertias on the sample with interpolated chroma when `chroma_decides` and the screen
        of every ``settings.chroma_screen``-th sampled pixel says it could change the verdict (`chroma_could_decide`).
    """
    if not chroma_decides(finalists.shape[0], chroma_rows, chroma_columns):
        return inertias
    screened = smoothed_inertias(image, rows, offsets, column_step, chroma_rows, chroma_columns, finalists, inertias,
                                 settings.chroma_screen)
    if not chroma_could_decide(inertias, screened, settings):
        return inertias
    return smoothed_inertias(image, rows, offsets, column_step, chroma_rows, chroma_columns, finalists, inertias, 1)


@kernel
def smoothed_inertias(image, rows, offsets, column_step, chroma_rows, chroma_columns, candidates, inertias, every):
    """The inertia of each candidate palette on the sample's pixels with interpolated chroma (`smoothed_pixel`).

    Only the pixels whose interpolated chroma moves a channel by half a level or more are read again: the rest
    round to the pixel they are, and the candidates' inertias on the sample as it was decoded stand for them.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
        B, G, R with each chroma sample repeated over a block of ``chroma_rows`` x ``chroma_columns`` pixels.
    rows, offsets, column_step
        The sample (`mpicolor.engine.palette.sample_rows`).
    chroma_rows, chroma_columns : int
        1 or 2 each.
    candidates : ndarray of shape (n_candidates, clusters, 3), float64
        Centres as B, G, R.
    inertias : ndarray of shape (n_candidates,), float64
        Each candidate's inertia on the sample as decoded (its converged inertia on the level the sample's points
        make).
    every : int
        Read every ``every``-th pixel of the sample (in sample order, from the first), each standing for ``every``.

    Returns
    -------
    ndarray of shape (n_candidates,), float64
        ``inertias`` plus, over the pixels read that move, ``every`` times their squared distance to the nearest
        centre with the chroma interpolated less as decoded; sums in sample order.
    """
    smoothed = inertias.copy()
    width = image.shape[1]
    skipped = every - 1
    for band in range(rows.shape[0]):
        y = rows[band]
        for x in range(offsets[band], width, column_step):
            skipped += 1
            if skipped < every:
                continue
            skipped = 0
            d_cb, d_cr = chroma_shift(image, y, x, chroma_rows, chroma_columns)
            if max(abs(_FROM_CB[0] * d_cb), abs(_FROM_CB[1] * d_cb + _FROM_CR[1] * d_cr),
                   abs(_FROM_CR[2] * d_cr)) < 0.5:
                continue
            b, g, r = np.float64(image[y, x, 0]), np.float64(image[y, x, 1]), np.float64(image[y, x, 2])
            b_s = min(255.0, max(0.0, b + _FROM_CB[0] * d_cb))
            g_s = min(255.0, max(0.0, g + _FROM_CB[1] * d_cb + _FROM_CR[1] * d_cr))
            r_s = min(255.0, max(0.0, r + _FROM_CR[2] * d_cr))
            for candidate in range(candidates.shape[0]):
                smoothed[candidate] += every * (_nearest(b_s, g_s, r_s, candidates[candidate])
                                                - _nearest(b, g, r, candidates[candidate]))
    return smoothed
