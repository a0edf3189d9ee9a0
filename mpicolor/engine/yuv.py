"""YUV to BGR for decoded video frames: FFmpeg's matrices and ranges in numba, for a whole frame or only the
pixels read.

A video decoder gives planes of Y, U and V (4:2:0: one U and one V for each 2x2 block of pixels). The palette
needs BGR. FFmpeg's conversion (swscale, PyAV's ``to_ndarray(format="bgr24")``) converts every pixel, while the
fast palette reads about one in eight to fifteen (`mpicolor.engine.palette.sample_rows`), so `grid_to_bgr`
converts only those, into a frame-sized buffer the palette then reads as it reads a decoded JPEG.

The arithmetic is swscale's: its coefficient table (`COEFFICIENTS`, by the frame's ``AVColorSpace``: BT.709,
BT.601 and SMPTE 170M, FCC, SMPTE 240M, BT.2020; unspecified and anything else as BT.601, swscale's default),
its range handling (limited 16-235 luma scaled by 255/219; full range with the chroma coefficients scaled by
224/255), 16 fractional bits truncated as swscale truncates, and chroma taken from the 2x2 block's one
sample, as swscale's unscaled converters do, with no interpolation. swscale's SIMD code keeps fewer bits,
and which code runs depends on the CPU (x86 and Power differ): this kernel is within 1 level of FFmpeg's
x86 output in blue and red and 2 in green (means 0.1 to 1.0 on real clips, ``tests/test_yuv.py``), and
gives the same pixels on every machine.

FFmpeg's conversion of a whole frame is 3 to 5 times faster than `to_bgr` (SIMD: 1.2 ms against 5 at 1080p,
docs/video-design.md), so a whole frame is best left to it (`mpicolor.state.videos.DecodedFrame.ffmpeg_bgr`);
`grid_to_bgr` and `sample_to_bgr` convert the sample of a 1080p frame in 0.5 to 0.8 ms, and `to_bgr` is the
same arithmetic for the frames that need every pixel to match the sample's.

Frames are returned upright: a display rotation (a multiple of 90 degrees counter-clockwise, as
`mpicolor.state.videos.DecodedFrame` gives it) is applied while converting, at no extra cost.
"""

import numpy as np

from mpicolor.engine.jit import kernel, njit  # numba's cache folder chosen before these compile

# swscale's ff_yuv2rgb_coeffs: (crv, cbu, cgu, cgv) in units of 1 / 65536, by AVColorSpace (0 to 10)
_BT709 = (117489, 138438, 13975, 34925)
_BT601 = (104597, 132201, 25675, 53279)
COEFFICIENTS = {0: _BT709, 1: _BT709, 2: _BT601, 3: _BT601, 4: (104448, 132798, 24759, 53109), 5: _BT601,
                6: _BT601, 7: (117579, 136230, 16907, 35559), 9: (110013, 140363, 12277, 42626),
                10: (110013, 140363, 12277, 42626)}
# 4:2:0 layouts converted here; FFmpeg's converter does the others (their planes come as "bgr24")
YUV420_FORMATS = ("yuv420p", "yuvj420p")
ROTATIONS = (0, 90, 180, 270)
_SHIFT = 16
_ONE = 1 << _SHIFT


def conversion(colorspace, full_range):
    """The integer coefficients of swscale's YUV to RGB conversion for a frame's colour space and range.

    Parameters
    ----------
    colorspace : int
        FFmpeg's ``AVColorSpace`` of the frame; values swscale has no table for (8, YCgCo, and those above
        10) take its default, BT.601.
    full_range : bool
        True for luma in 0-255 (JPEG range), False for 16-235.

    Returns
    -------
    ndarray of shape (6,), int64
        ``(luma offset, luma scale, crv, cbu, cgu, cgv)``, scales in units of ``1 / 65536``.
    """
    crv, cbu, cgu, cgv = COEFFICIENTS.get(int(colorspace), _BT601)
    if full_range:
        # swscale's integer arithmetic, divisions truncated as its C does
        return np.array([0, _ONE, crv * 224 // 255, cbu * 224 // 255, cgu * 224 // 255, cgv * 224 // 255], np.int64)
    return np.array([16, _ONE * 255 // 219, crv, cbu, cgu, cgv], np.int64)


def upright_shape(height, width, rotation):
    """``(height, width)`` of a coded frame shown with its display rotation."""
    return (width, height) if rotation in (90, 270) else (height, width)


def to_bgr(pixel_format, planes, colorspace, full_range, rotation=0, out=None):
    """Convert a whole decoded frame to upright BGR.

    Parameters
    ----------
    pixel_format : {"yuv420p", "yuvj420p", "bgr24"}
        The planes' layout; ``"bgr24"`` is a frame FFmpeg has converted already (other layouts).
    planes : tuple of ndarray
        ``(y, u, v)`` for 4:2:0: y of shape (height, width), u and v of shape (ceil(height / 2),
        ceil(width / 2)), uint8, any strides; ``(image,)`` of shape (height, width, 3), uint8, for
        ``"bgr24"``.
    colorspace : int
        FFmpeg's ``AVColorSpace`` (`conversion`).
    full_range : bool
    rotation : {0, 90, 180, 270}, default 0
        Display rotation, degrees counter-clockwise.
    out : ndarray or None
        Where to write, of the upright shape (`upright_shape`) by 3, uint8, C-contiguous; None allocates it.

    Returns
    -------
    ndarray of shape (upright height, upright width, 3), uint8
        BGR pixels, C-contiguous (`out` when given).
    """
    height, width = planes[0].shape[:2]
    out = _output(out, upright_shape(height, width, _checked_rotation(rotation)))
    if pixel_format == "bgr24":
        out[...] = np.rot90(planes[0], rotation // 90)
        return out
    y, u, v = _yuv420(pixel_format, planes)
    _yuv420_to_bgr(y, u, v, conversion(colorspace, full_range), rotation // 90, out)
    return out


def grid_to_bgr(pixel_format, planes, colorspace, full_range, rows, offsets, column_step, rotation=0, out=None):
    """Convert only the pixels of a grid of an upright frame: every `column_step`-th pixel of some rows.

    The grid is `mpicolor.engine.palette.sample_rows`'s: row ``rows[k]`` of the upright frame from column
    ``offsets[k]`` on, every ``column_step`` columns. The other pixels of `out` are left as they are, so
    that a buffer can be reused from frame to frame when the palette reads only the grid.

    Parameters
    ----------
    pixel_format, planes, colorspace, full_range, rotation
        As `to_bgr`.
    rows, offsets : ndarray of shape (n_rows,), int64
        Rows of the upright frame, and the first column converted in each.
    column_step : int
        >= 1.
    out : ndarray or None
        Of the upright shape by 3, uint8, C-contiguous; None allocates it (uninitialised outside the grid).

    Returns
    -------
    ndarray of shape (upright height, upright width, 3), uint8
        `out`, with the grid's pixels converted.
    """
    height, width = planes[0].shape[:2]
    out = _output(out, upright_shape(height, width, _checked_rotation(rotation)))
    _grid(pixel_format, planes, colorspace, full_range, rows, offsets, column_step, rotation, out.reshape(-1, 3),
          out.shape[1])
    return out


def sample_to_bgr(pixel_format, planes, colorspace, full_range, rows, offsets, column_step, rotation=0, out=None):
    """Convert the pixels of a grid of an upright frame into one array, in grid order.

    The same pixels as `grid_to_bgr`, written one after another (row by row, left to right): for the fast
    palette's grid, ``image.reshape(-1, 3)[sample_indices(height, width)]`` of the converted frame, the
    sample itself, without a frame-sized buffer.

    Parameters
    ----------
    pixel_format, planes, colorspace, full_range, rows, offsets, column_step, rotation
        As `grid_to_bgr`.
    out : ndarray or None
        Of shape (>= n_pixels, 3), uint8, C-contiguous; None allocates it.

    Returns
    -------
    ndarray of shape (n_pixels, 3), uint8
        The grid's pixels, BGR (a view of `out` when given).
    """
    width = upright_shape(*planes[0].shape[:2], _checked_rotation(rotation))[1]
    rows, offsets = np.asarray(rows, np.int64), np.asarray(offsets, np.int64)
    size = int((-(-(width - offsets) // int(column_step))).sum())
    if out is None:
        out = np.empty((size, 3), np.uint8)
    elif (out.ndim != 2 or out.shape[0] < size or out.shape[1] != 3 or out.dtype != np.uint8
          or not out.flags.c_contiguous):
        raise ValueError(f"out should be a C-contiguous uint8 array of shape (>= {size}, 3), "
                         f"got {out.dtype} {out.shape}")
    _grid(pixel_format, planes, colorspace, full_range, rows, offsets, column_step, rotation, out, 0)
    return out[:size]


def _grid(pixel_format, planes, colorspace, full_range, rows, offsets, column_step, rotation, out, out_width):
    """Convert a grid's pixels into ``out`` (n, 3): a frame buffer of width ``out_width``, or the sample when 0."""
    rows, offsets = np.asarray(rows, np.int64), np.asarray(offsets, np.int64)
    if pixel_format == "bgr24":
        _grid_copy(np.rot90(planes[0], rotation // 90), rows, offsets, int(column_step), out, out_width)
    else:
        y, u, v = _yuv420(pixel_format, planes)
        _yuv420_grid(y, u, v, conversion(colorspace, full_range), rotation // 90, rows, offsets, int(column_step), out,
                     out_width)


def _checked_rotation(rotation):
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation={rotation!r} should be one of {ROTATIONS} (degrees counter-clockwise)")
    return rotation


def _output(out, shape):
    if out is None:
        return np.empty(shape + (3,), np.uint8)
    if out.shape != shape + (3,) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out should be a C-contiguous uint8 array of shape {shape + (3,)}, got {out.dtype} "
                         f"{out.shape}")
    return out


def _yuv420(pixel_format, planes):
    if pixel_format not in YUV420_FORMATS:
        raise ValueError(f"pixel_format={pixel_format!r} should be one of {YUV420_FORMATS + ('bgr24',)}")
    y, u, v = planes
    chroma = ((y.shape[0] + 1) // 2, (y.shape[1] + 1) // 2)
    if u.shape != chroma or v.shape != chroma:
        raise ValueError(f"4:2:0 chroma planes of a {y.shape[1]}x{y.shape[0]} frame should be {chroma[1]}x"
                         f"{chroma[0]}, got {u.shape[1]}x{u.shape[0]} and {v.shape[1]}x{v.shape[0]}")
    return y, u, v


@njit(cache=True, nogil=True, inline="always")
def _clip(value):
    return min(max(value, 0), 255)


@njit(cache=True, nogil=True, inline="always")
def _put_bgr(out, target, luma, cb, cr, coefficients):
    """Write one pixel's B, G, R into ``out[target]`` from its Y, U and V samples (uint8)."""
    scaled = np.int32(coefficients[1]) * (np.int32(luma) - np.int32(coefficients[0]))
    cb, cr = np.int32(cb) - 128, np.int32(cr) - 128
    out[target, 0] = _clip((scaled + np.int32(coefficients[3]) * cb) >> _SHIFT)
    out[target, 1] = _clip((scaled - np.int32(coefficients[4]) * cb - np.int32(coefficients[5]) * cr) >> _SHIFT)
    out[target, 2] = _clip((scaled + np.int32(coefficients[2]) * cr) >> _SHIFT)


@kernel
def _yuv420_to_bgr(y, u, v, coefficients, turns, out):
    """Every pixel of a 4:2:0 frame to BGR in ``out``, upright after ``turns`` quarter turns counter-clockwise."""
    if turns != 0:
        rows = np.arange(out.shape[0])
        _yuv420_grid(y, u, v, coefficients, turns, rows, np.zeros_like(rows), 1, out.reshape(-1, 3), out.shape[1])
        return
    offset, scale = np.int32(coefficients[0]), np.int32(coefficients[1])
    crv, cbu, cgu, cgv = (np.int32(coefficients[2]), np.int32(coefficients[3]), np.int32(coefficients[4]),
                          np.int32(coefficients[5]))
    # the chroma terms of a pair of rows, computed once for both
    blue = np.empty(u.shape[1], np.int32)
    green = np.empty(u.shape[1], np.int32)
    red = np.empty(u.shape[1], np.int32)
    for row in range(y.shape[0]):
        if row % 2 == 0:
            cb_line, cr_line = u[row >> 1], v[row >> 1]
            for c in range(u.shape[1]):
                cb, cr = np.int32(cb_line[c]) - 128, np.int32(cr_line[c]) - 128
                blue[c] = cbu * cb
                green[c] = -cgu * cb - cgv * cr
                red[c] = crv * cr
        luma_line, line = y[row], out[row]
        for column in range(y.shape[1]):
            luma = scale * (np.int32(luma_line[column]) - offset)
            c = column >> 1
            line[column, 0] = _clip((luma + blue[c]) >> _SHIFT)
            line[column, 1] = _clip((luma + green[c]) >> _SHIFT)
            line[column, 2] = _clip((luma + red[c]) >> _SHIFT)


@kernel
def _yuv420_grid(y, u, v, coefficients, turns, rows, offsets, column_step, out, out_width):
    """The pixels of a grid of the upright frame to BGR.

    ``out`` is (n, 3): the frame buffer's pixels (pixel (i, j) at ``i * out_width + j``), or with
    ``out_width == 0`` the sample in grid order. Returns the pixels converted.
    """
    if turns == 0:
        return _yuv420_unrotated_grid(y, u, v, coefficients, rows, offsets, column_step, out, out_width)
    height, width = y.shape
    upright_width = height if turns % 2 else width
    # coded (row, column) = (row0 + row_i * i + row_j * j, column0 + column_i * i + column_j * j), as np.rot90
    if turns == 1:
        row0, row_i, row_j, column0, column_i, column_j = 0, 0, 1, width - 1, -1, 0
    elif turns == 2:
        row0, row_i, row_j, column0, column_i, column_j = height - 1, -1, 0, width - 1, 0, -1
    else:
        row0, row_i, row_j, column0, column_i, column_j = height - 1, 0, -1, 0, 1, 0
    n = 0
    for k in range(rows.shape[0]):
        i = rows[k]
        for j in range(offsets[k], upright_width, column_step):
            row = row0 + row_i * i + row_j * j
            column = column0 + column_i * i + column_j * j
            _put_bgr(out, i * out_width + j if out_width else n, y[row, column], u[row >> 1, column >> 1],
                     v[row >> 1, column >> 1], coefficients)
            n += 1
    return n


@kernel
def _yuv420_unrotated_grid(y, u, v, coefficients, rows, offsets, column_step, out, out_width):
    """`_yuv420_grid` of an unrotated frame: each row's planes looked up once, 1.3x as fast."""
    width = y.shape[1]
    n = 0
    for k in range(rows.shape[0]):
        row = rows[k]
        luma_line, cb_line, cr_line = y[row], u[row >> 1], v[row >> 1]
        for column in range(offsets[k], width, column_step):
            _put_bgr(out, row * out_width + column if out_width else n, luma_line[column], cb_line[column >> 1],
                     cr_line[column >> 1], coefficients)
            n += 1
    return n


@kernel
def _grid_copy(image, rows, offsets, column_step, out, out_width):
    """The pixels of a grid of ``image`` (already BGR and upright) into ``out``, as `_yuv420_grid` places them."""
    n = 0
    for k in range(rows.shape[0]):
        i = rows[k]
        for j in range(offsets[k], image.shape[1], column_step):
            target = i * out_width + j if out_width else n
            out[target, 0] = image[i, j, 0]
            out[target, 1] = image[i, j, 1]
            out[target, 2] = image[i, j, 2]
            n += 1
    return n
