"""Letterbox and pillarbox bars: find the uniform dark borders of a frame, so the palette can leave them out."""

import numpy as np

# a border pixel is at most this bright in every channel (encoders leave bars a few levels above black)
DARK = 24
# bars cover at most this fraction of the frame on each side: a dark scene is not a letterbox
MOST = 1 / 3
# columns are judged on every STEP-th row: bars are uniform, so a sample decides
STEP = 4


def detect_borders(image, dark=DARK):
    """Dark bars along the edges of a frame.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3), uint8
        The frame, BGR.
    dark : int
        Brightest channel value still taken for a bar.

    Returns
    -------
    (top, bottom, left, right) : tuple of int
        Rows and columns of bars on each side; all zero when the frame has none, or when it is dark all over
        (a night scene keeps its palette).
    """
    height, width = image.shape[:2]
    # reductions along contiguous memory: a strided max over two axes is 50x slower
    rows = np.ascontiguousarray(image).reshape(height, -1).max(axis=1) > dark
    columns = image[::STEP].max(axis=0).max(axis=1) > dark
    if not rows.any():
        return 0, 0, 0, 0
    top, bottom = _run(rows, int(height * MOST)), _run(rows[::-1], int(height * MOST))
    left, right = _run(columns, int(width * MOST)), _run(columns[::-1], int(width * MOST))
    return top, bottom, left, right


def _run(lit, limit):
    """How many leading entries of ``lit`` are False, or 0 when that exceeds ``limit``."""
    first = int(np.argmax(lit))
    return first if first <= limit else 0


def crop(image, borders):
    """The frame without its bars: a view, no copy."""
    top, bottom, left, right = borders
    height, width = image.shape[:2]
    return image[top:height - bottom, left:width - right]
