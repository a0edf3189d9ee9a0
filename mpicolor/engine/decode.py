"""Decoding of one frame's bytes to a BGR image, refusing anything that is not a whole image."""

import math
import struct

import cv2
import numpy as np
import simplejpeg

# One MPI rank per core: OpenCV must not start a thread pool of its own in every rank.
cv2.setNumThreads(1)

SCALES = (1, 2, 4, 8)
DEFAULT_MAX_PIXELS = 50_000_000
# What a member may hold per pixel its header declares, before it is refused unread. Real encoders stay under
# 8 bytes (16-bit RGBA PNG stored without compression; JPEG of noise at quality 100 with 4:4:4: 4.1); a
# baseline JPEG's Huffman codes and byte stuffing cannot pass about 20. 32 refuses no real frame, and bounds
# what a rank reads for one frame by --max-pixels rather than by what a tar header declares.
MAX_BYTES_PER_PIXEL = 32
# Room for what is not pixels (EXIF, ICC profiles, XMP, PNG text chunks): added to the bound above, and how
# far into a member its frame header may lie.
METADATA_BYTES = 64 << 20

_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
# JPEG markers: start of frame (the header with the size), and markers without a length
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}
_SEGMENT = struct.Struct(">BBH")  # 0xFF, marker, length
_FRAME_SIZE = struct.Struct(">HH")  # height, width, after the start-of-frame segment's length and precision
_OPENCV_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                   4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


class BadFrame(ValueError):
    """The bytes of a frame are not a whole, decodable image of an allowed size."""


def decode_frame(data, max_pixels=DEFAULT_MAX_PIXELS, scale=1, smooth_chroma=True):
    """Decode JPEG or PNG bytes to a BGR image.

    Grayscale, alpha, 16-bit and CMYK images are converted to 8-bit BGR (alpha is
    dropped). The size is checked from the header before any pixel is decoded.

    Parameters
    ----------
    data : bytes-like
        The encoded frame. The format is found from the content, not the name.
    max_pixels : int, default 50_000_000
        Largest width * height accepted.
    scale : {1, 2, 4, 8}, default 1
        Decode at 1/scale of the size in each direction (``ceil(size / scale)``).
        JPEG is reduced in the DCT domain; PNG is decoded fully, then resized with
        ``cv2.INTER_AREA``.
    smooth_chroma : bool, default True
        JPEG chroma stored at half resolution (4:2:0, 4:2:2) is interpolated, as OpenCV
        decodes it (libjpeg's "fancy upsampling"); False repeats each chroma sample
        instead (libjpeg-turbo's ``fastupsample``), about 15% faster on such frames.

    Returns
    -------
    ndarray of shape (height, width, 3), uint8
        BGR pixels, C-contiguous.

    Raises
    ------
    BadFrame
        Empty data, not a JPEG or PNG, truncated or corrupt data, or more pixels
        than ``max_pixels``; the message says which.
    ValueError
        ``scale`` or ``max_pixels`` out of range.
    """
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} should be one of {SCALES}")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels={max_pixels!r} should be an int >= 1")
    data = bytes(data)
    if not data:
        raise BadFrame("empty frame data (0 bytes)")
    if data.startswith(_JPEG_START):
        image = _decode_jpeg(data, max_pixels, scale, smooth_chroma)
    elif data.startswith(_PNG_SIGNATURE):
        image = _decode_png(data, max_pixels, scale)
    else:
        raise _not_an_image(data, len(data))
    return np.ascontiguousarray(image)


# a JPEG's chroma subsampling (simplejpeg's name): the rows and columns of pixels that share one chroma sample
_CHROMA_BLOCKS = {"420": (2, 2), "422": (1, 2), "440": (2, 1)}


def repeated_chroma(data, scale=1, smooth_chroma=True):
    """The block of pixels over which `decode_frame` repeats each chroma sample of these bytes.

    Parameters
    ----------
    data : bytes-like
        A frame `decode_frame` decoded.
    scale, smooth_chroma
        As `decode_frame` took them.

    Returns
    -------
    (int, int)
        Rows and columns of the block: ``(2, 2)`` for a 4:2:0 JPEG decoded at full size without smoothing,
        ``(1, 2)`` for 4:2:2, ``(2, 1)`` for 4:4:0; ``(1, 1)`` when each pixel has its own (interpolated, or
        stored at full resolution, or a PNG, or a reduced decode, or 4:1:1, whose chroma is not rebuilt).
    """
    if smooth_chroma or scale != 1 or bytes(data[:3]) != _JPEG_START:
        return 1, 1
    _, _, colourspace, subsampling = simplejpeg.decode_jpeg_header(data)
    return _CHROMA_BLOCKS.get(subsampling, (1, 1)) if colourspace == "YCbCr" else (1, 1)


def check_head(head, size, max_pixels=DEFAULT_MAX_PIXELS):
    """Check a frame from its first bytes, before the rest is read.

    Parameters
    ----------
    head : bytes
        The first bytes of the frame (all of them when it is short).
    size : int
        The frame's whole size in bytes, e.g. a tar member's declared size.
    max_pixels : int, default 50_000_000
        Largest width * height accepted, as for `decode_frame`.

    Returns
    -------
    bool
        True when the header is in ``head`` and the frame may be read; False when ``head`` ends before the
        header (read more of it: the header lies within the first `METADATA_BYTES` or the frame is refused).

    Raises
    ------
    BadFrame
        Empty, not a JPEG or PNG, no header, more pixels than ``max_pixels``, or more bytes than any frame
        of the declared pixels can hold (`MAX_BYTES_PER_PIXEL` a pixel plus `METADATA_BYTES`).
    """
    if size == 0:
        raise BadFrame("empty frame data (0 bytes)")
    if head.startswith(_JPEG_START):
        kind, dimensions = "JPEG", _jpeg_dimensions(head)
    elif head.startswith(_PNG_SIGNATURE):
        kind, dimensions = "PNG", _png_dimensions(head, size)
    elif len(head) >= min(size, len(_PNG_SIGNATURE)):
        raise _not_an_image(head, size)
    else:
        return False
    if dimensions is None:
        if len(head) >= METADATA_BYTES:
            raise BadFrame(f"corrupt {kind}: no frame header in the first {len(head):,} of {size:,} bytes")
        return False
    width, height = dimensions
    _check_size(kind, width, height, max_pixels)
    most = MAX_BYTES_PER_PIXEL * width * height + METADATA_BYTES
    if size > most:
        raise BadFrame(f"{kind} of {width}x{height} pixels in {size:,} bytes: more than a frame of that size can "
                       f"hold ({most:,} bytes at most); not read")
    return True


def _not_an_image(head, size):
    return BadFrame(f"not a JPEG or PNG image ({size} bytes starting {head[:8]!r})")


def _jpeg_dimensions(head):
    """(width, height) from the start-of-frame segment, walking the marker segments before it; None when
    ``head`` ends first."""
    position = len(_JPEG_START) - 1
    while position + _SEGMENT.size <= len(head):
        fill, marker, length = _SEGMENT.unpack_from(head, position)
        if fill != 0xFF:
            raise BadFrame(f"corrupt JPEG header: no marker at byte {position}")
        if marker in _SOF_MARKERS:
            if position + 5 + _FRAME_SIZE.size > len(head):
                return None
            height, width = _FRAME_SIZE.unpack_from(head, position + 5)
            return width, height
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
        elif marker in _STANDALONE_MARKERS:
            position += 2
        elif marker in (0xD8, 0xD9, 0xDA):
            raise BadFrame(f"corrupt JPEG header: marker FF {marker:02X} at byte {position} before the frame header")
        else:
            position += 2 + length
    return None


def _png_dimensions(head, size):
    """(width, height) from the IHDR chunk; None when ``head`` ends first."""
    if len(head) < min(size, 33):
        return None
    if size < 33 or head[12:16] != b"IHDR":
        raise BadFrame(f"corrupt PNG: no IHDR header chunk in {size} bytes")
    return struct.unpack(">II", head[16:24])


def _check_size(kind, width, height, max_pixels):
    if width < 1 or height < 1:
        raise BadFrame(f"{kind} header gives an empty image of {width}x{height} pixels")
    if width * height > max_pixels:
        raise BadFrame(f"{kind} of {width}x{height} = {width * height:,} pixels is above "
                       f"max_pixels={max_pixels:,}")


def _decode_jpeg(data, max_pixels, scale, smooth_chroma):
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data, strict=True)
    except ValueError as error:
        raise BadFrame(f"corrupt or truncated JPEG header ({len(data)} bytes): {error}") from None
    _check_size("JPEG", width, height, max_pixels)
    # libjpeg stops quietly at a missing end marker when the scan data happens to be
    # complete; a frame cut there is still truncated. Encoders may pad with NULs.
    if not data.rstrip(b"\x00").endswith(_JPEG_END):
        raise BadFrame(f"truncated JPEG: {len(data)} bytes without the end-of-image marker FF D9")
    target = {"min_height": math.ceil(height / scale), "min_width": math.ceil(width / scale)}
    cmyk = colourspace in ("CMYK", "YCCK")
    try:
        # strict=True turns libjpeg's warnings ("Corrupt JPEG data", "Premature end of
        # JPEG file") into errors instead of grey padding and a line on stderr.
        image = simplejpeg.decode_jpeg(data, "CMYK" if cmyk else "BGR", fastupsample=not smooth_chroma, strict=True,
                                       **target)
    except ValueError as error:
        raise BadFrame(f"corrupt JPEG data: {error}") from None
    if cmyk:
        # libjpeg-turbo cannot convert CMYK to BGR; OpenCV knows the Adobe inversion.
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _OPENCV_REDUCED[scale])
    return image


def _decode_png(data, max_pixels, scale):
    width, height = _png_dimensions(data, len(data))
    _check_size("PNG", width, height, max_pixels)
    if not data.endswith(_PNG_END):
        raise BadFrame(f"truncated PNG: {len(data)} bytes without the IEND chunk at the end")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadFrame("corrupt PNG data: OpenCV could not decode it")
    if scale > 1:
        size = (math.ceil(width / scale), math.ceil(height / scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image
