"""``mpicolor render``: the colour barcode of a run, one column per frame, as PNG (or SVG with hover text).

Frames are ordered by tarball file name, then by member name: the time order of what ``mpicolor pack``
writes. Each column shows one frame:

``stripes`` (default)
    the frame's palette as horizontal bands, heights proportional to the shares, the dominant colour on top;
``dominant``
    the whole column in the dominant colour;
``average``
    the share-weighted mean of the palette, averaged in linear light (sRGB decoded, averaged, encoded
    again): averaging the gamma-encoded values would come out too dark.

A frame that failed (a row of ``failures``) is drawn as a grey hatch (diagonal bands of #606060 and
#a0a0a0) so the time axis stays true; a frame not computed yet (a partial tarball in the checkpoint) is
transparent. ``--width W`` resamples to W columns: column c stands for frames ``[c n / W, (c + 1) n / W)``;
``stripes`` and ``dominant`` show the middle frame of that range, ``average`` averages all its computed
frames in linear light.
"""

import html
import logging
import os
from dataclasses import dataclass

import cv2
import numpy as np

from mpicolor import results
from mpicolor.state.atomic import write_atomically
from mpicolor.logs import setup_logging

log = logging.getLogger(__name__)

MODES = ("stripes", "dominant", "average")
FORMATS = (".png", ".svg")
# what a column shows
COLOURS, FAILED, PENDING = 0, 1, 2
# the failed-frame hatch: two greys in diagonal bands of HATCH pixels
HATCH_DARK, HATCH_LIGHT, HATCH = 0x60, 0xA0, 4
# PNG columns beyond this make an unwieldy picture; say how to resample
WIDE = 20_000


def add_arguments(parser):
    """The flags of ``mpicolor render``."""
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the OUTPUT_DIR of `mpicolor run`")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the picture: FILE.png, or FILE.svg with frame name and colours on hover")
    parser.add_argument("--tarball", nargs="+", default=None, metavar="NAME",
                        help="only these tarballs (default: all, in name order)")
    parser.add_argument("--height", type=int, default=160, metavar="H",
                        help="picture height in pixels (default 160)")
    parser.add_argument("--width", type=int, default=None, metavar="W",
                        help="resample to W columns (default: one column per frame)")
    parser.add_argument("--mode", choices=MODES, default="stripes",
                        help="stripes: the palette by share (default); dominant: the dominant colour; "
                             "average: the mean colour in linear light")


def main(args):
    """Render OUTPUT_DIR's barcode into ``args.out``.

    Returns
    -------
    int
        0 when written; 2 for a bad setting or nothing to render; 3 when OUTPUT_DIR cannot be read.
    """
    setup_logging()
    suffix = os.path.splitext(args.out)[1].lower()
    try:
        if suffix not in FORMATS:
            raise ValueError(f"--out {args.out} should end in {' or '.join(FORMATS)}")
        if args.height < 1:
            raise ValueError(f"--height {args.height} should be >= 1")
        if args.width is not None and args.width < 1:
            raise ValueError(f"--width {args.width} should be >= 1")
        view = results.load(args.output_dir)
        tarballs = view.select(args.tarball) if args.tarball else view.tarballs
        frames = frame_sequence(tarballs)
        if not frames.names:
            raise ValueError(f"{args.output_dir} holds no frames to render "
                             f"(tarballs: {', '.join(t.name for t in tarballs) or 'none'})")
    except FileNotFoundError as error:
        log.error("%s", error)
        return results.EXIT_NO_RESULTS
    except ValueError as error:
        log.error("%s", error)
        return 2
    width = args.width or len(frames.names)
    if suffix == ".png" and width > WIDE:
        log.warning("one column per frame makes the picture %d pixels wide; --width W resamples to W columns",
                    width)
    barcode = make_barcode(frames, width, args.height, args.mode)
    if suffix == ".png":
        write_atomically(args.out, png_bytes(barcode))
    else:
        write_atomically(args.out, svg_text(barcode, frames).encode())
    log.info("wrote %s: %d frames of %d tarballs (read from the %s) in %d columns, mode %s", args.out,
             len(frames.names), len(tarballs), view.source, width, args.mode)
    return 0


@dataclass
class FrameSequence:
    """Every frame to render, in time order.

    Attributes
    ----------
    names : list of str, length n_frames
        ``{tarball}:{member name}``.
    packed : ndarray of shape (n_frames, clusters), uint32
    shares : ndarray of shape (n_frames, clusters), float32
    kind : ndarray of shape (n_frames,), uint8
        ``COLOURS``, ``FAILED`` or ``PENDING``.
    reasons : dict of int to str
        Why failed frames (by index in this sequence) could not be processed.
    """

    names: list
    packed: np.ndarray
    shares: np.ndarray
    kind: np.ndarray
    reasons: dict


def frame_sequence(tarballs):
    """The frames of ``tarballs`` ordered by tarball name, then member name.

    Parameters
    ----------
    tarballs : list of mpicolor.results.TarballView

    Returns
    -------
    FrameSequence
    """
    tarballs = sorted(tarballs, key=lambda tarball: tarball.name)
    clusters = max((tarball.packed.shape[1] for tarball in tarballs), default=1)
    names, packed, shares, kind, reasons = [], [], [], [], {}
    for tarball in tarballs:
        order = tarball.name_order()
        for position in order.tolist():
            if position in tarball.failures:
                reasons[len(names)] = tarball.failures[position]
            names.append(f"{tarball.name}:{tarball.frames[position]}")
        packed.append(tarball.packed[order])
        shares.append(tarball.shares[order])
        kind.append(np.select([tarball.is_failed()[order], tarball.is_pending()[order]], [FAILED, PENDING],
                              COLOURS))
    if not names:
        return FrameSequence([], np.zeros((0, clusters), np.uint32), np.zeros((0, clusters), np.float32),
                             np.zeros(0, np.uint8), {})
    return FrameSequence(names, np.concatenate(packed), np.concatenate(shares),
                         np.concatenate(kind).astype(np.uint8), reasons)


def unpack(packed):
    """Packed ``R << 16 | G << 8 | B`` colours as RGB.

    Parameters
    ----------
    packed : ndarray of shape (...), integer

    Returns
    -------
    ndarray of shape (..., 3), uint8
    """
    packed = np.asarray(packed, np.uint32)
    return np.stack([(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=-1).astype(np.uint8)


def srgb_to_linear(encoded):
    """sRGB values in [0, 1] to linear light (IEC 61966-2-1), same shape, float64."""
    encoded = np.asarray(encoded, np.float64)
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear):
    """Linear light in [0, 1] to sRGB values in [0, 1], same shape, float64."""
    linear = np.clip(np.asarray(linear, np.float64), 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


@dataclass
class Barcode:
    """The picture as columns of horizontal bands, before it is drawn as PNG or SVG.

    Attributes
    ----------
    colors : ndarray of shape (width, bands, 3), uint8
        RGB of each band, top band first.
    bounds : ndarray of shape (width, bands + 1), float64
        Row boundaries of the bands, from 0 to ``height``.
    kind : ndarray of shape (width,), uint8
        ``COLOURS``, ``FAILED`` or ``PENDING``.
    frame : ndarray of shape (width,), int64
        The frame each column shows (the middle one of its range).
    first, stop : ndarray of shape (width,), int64
        The range of frames the column stands for.
    height : int
    mode : str
    """

    colors: np.ndarray
    bounds: np.ndarray
    kind: np.ndarray
    frame: np.ndarray
    first: np.ndarray
    stop: np.ndarray
    height: int
    mode: str


def column_ranges(n_frames, width):
    """Frames ``[first, stop)`` that each of ``width`` columns stands for; at least one frame each.

    Returns
    -------
    first, stop : ndarray of shape (width,), int64
    """
    edges = np.arange(width + 1, dtype=np.int64) * n_frames // width
    first = np.minimum(edges[:-1], n_frames - 1)
    return first, np.maximum(edges[1:], first + 1)


def make_barcode(frames, width, height, mode):
    """The columns of the barcode.

    Parameters
    ----------
    frames : FrameSequence
        At least one frame.
    width, height : int
        Columns and rows of the picture.
    mode : str
        One of ``MODES``.

    Returns
    -------
    Barcode
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} should be one of {', '.join(MODES)}")
    first, stop = column_ranges(len(frames.names), width)
    middle = (first + stop - 1) // 2
    kind = frames.kind[middle].copy()
    if mode == "stripes":
        totals = frames.shares[middle].astype(np.float64).sum(axis=1, keepdims=True)
        fractions = np.cumsum(frames.shares[middle], axis=1, dtype=np.float64) / np.where(totals > 0, totals, 1.0)
        bounds = np.concatenate([np.zeros((width, 1)), fractions * height], axis=1)
        bounds[:, -1] = height
        return Barcode(unpack(frames.packed[middle]), bounds, kind, middle, first, stop, height, mode)
    whole = np.tile([0.0, float(height)], (width, 1))
    if mode == "dominant":
        return Barcode(unpack(frames.packed[middle, :1]), whole, kind, middle, first, stop, height, mode)
    average, computed = _linear_averages(frames, first, stop)
    kind[computed] = COLOURS
    encoded = np.rint(linear_to_srgb(average) * 255).astype(np.uint8)
    return Barcode(encoded[:, None, :], whole, kind, middle, first, stop, height, mode)


def _linear_averages(frames, first, stop):
    """Per column the mean colour in linear light of its computed frames, and whether it has any.

    Returns
    -------
    average : ndarray of shape (width, 3), float64
        Linear RGB in [0, 1] (zeros for columns without a computed frame).
    computed : ndarray of shape (width,), bool
    """
    shares = frames.shares.astype(np.float64)
    totals = shares.sum(axis=1, keepdims=True)
    weights = shares / np.where(totals > 0, totals, 1.0)
    linear = srgb_to_linear(unpack(frames.packed) / 255.0)
    usable = (frames.kind == COLOURS) & (totals[:, 0] > 0)
    per_frame = np.einsum("nk,nkc->nc", weights, linear) * usable[:, None]
    # prefix sums make every column's mean O(1), whatever the number of frames per column
    sums = np.concatenate([np.zeros((1, 3)), np.cumsum(per_frame, axis=0)])
    counts = np.concatenate([[0], np.cumsum(usable)])
    count = counts[stop] - counts[first]
    average = (sums[stop] - sums[first]) / np.maximum(count, 1)[:, None]
    return average, count > 0


def draw(barcode):
    """The barcode as pixels.

    Returns
    -------
    ndarray of shape (height, width, 4), uint8, RGBA
        Failed columns hatched grey, pending columns transparent.
    """
    width = len(barcode.kind)
    rows = np.arange(barcode.height, dtype=np.float64)[:, None] + 0.5
    band = np.zeros((barcode.height, width), np.uint8)
    for boundary in barcode.bounds[:, 1:-1].T:
        band += rows >= boundary[None, :]
    image = np.empty((barcode.height, width, 4), np.uint8)
    image[..., :3] = barcode.colors[np.arange(width)[None, :], band]
    image[..., 3] = 255
    failed = barcode.kind == FAILED
    if failed.any():
        diagonal = (np.arange(barcode.height)[:, None] + np.flatnonzero(failed)[None, :]) // HATCH % 2
        image[:, failed, :3] = np.where(diagonal, HATCH_LIGHT, HATCH_DARK)[..., None].astype(np.uint8)
    image[:, barcode.kind == PENDING] = 0
    return image


def png_bytes(barcode):
    """The barcode encoded as PNG (RGBA)."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(draw(barcode), cv2.COLOR_RGBA2BGRA))
    if not ok:
        raise RuntimeError("OpenCV could not encode the barcode as PNG")
    return encoded.tobytes()


def svg_text(barcode, frames):
    """The barcode as SVG, one group per column whose title (shown on hover) names the frame and its colours."""
    width = len(barcode.kind)
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{barcode.height}" '
             f'viewBox="0 0 {width} {barcode.height}" shape-rendering="crispEdges">',
             '<defs><pattern id="failed" width="8" height="8" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)">'
             f'<rect width="8" height="8" fill="{hex_colour([HATCH_DARK] * 3)}"/>'
             f'<rect width="4" height="8" fill="{hex_colour([HATCH_LIGHT] * 3)}"/>'
             '</pattern></defs>']
    for column in range(width):
        title = html.escape(_column_title(barcode, frames, column))
        lines.append(f"<g><title>{title}</title>")
        if barcode.kind[column] == COLOURS:
            for colour, top, bottom in zip(barcode.colors[column], barcode.bounds[column, :-1],
                                           barcode.bounds[column, 1:]):
                if bottom > top:
                    lines.append(f'<rect x="{column}" y="{top:.2f}" width="1" height="{bottom - top:.2f}" '
                                 f'fill="{hex_colour(colour)}"/>')
        else:
            # a pending column is an invisible rectangle: it still shows its title on hover
            fill = 'fill="url(#failed)"' if barcode.kind[column] == FAILED else 'fill="#000" fill-opacity="0"'
            lines.append(f'<rect x="{column}" y="0" width="1" height="{barcode.height}" {fill}/>')
        lines.append("</g>")
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def _column_title(barcode, frames, column):
    frame = int(barcode.frame[column])
    first, stop = int(barcode.first[column]), int(barcode.stop[column])
    lines = [frames.names[frame]]
    if stop - first > 1:
        lines.append(f"column of {stop - first} frames: {frames.names[first]} .. {frames.names[stop - 1]}")
    if barcode.kind[column] == FAILED:
        lines.append(f"failed: {frames.reasons.get(frame, 'no reason recorded')}")
    elif barcode.kind[column] == PENDING:
        lines.append("not computed yet")
    elif barcode.mode == "average":
        lines.append(f"average {hex_colour(barcode.colors[column, 0])}")
    else:
        lines += [f"{hex_colour(colour)} {100 * share:.0f}%" for colour, share in
                  zip(unpack(frames.packed[frame]), frames.shares[frame]) if share > 0]
    return "\n".join(lines)


def hex_colour(colour):
    """``#rrggbb`` of an RGB triple."""
    return "#" + "".join(f"{int(value):02x}" for value in colour)
