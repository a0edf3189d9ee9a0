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

from mpicolor.job.exits import EXIT_INPUT_FAILED, EXIT_USAGE
from mpicolor.job.logs import setup_logging
from mpicolor.state.atomic import write_atomically
from mpicolor.tools import stored

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
    stored.add_arguments(parser)
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the picture: FILE.png, or FILE.svg with frame name and colours on hover")
    parser.add_argument("--height", type=int, default=160, metavar="H",
                        help="picture height in pixels (default 160)")
    parser.add_argument("--width", type=int, default=None, metavar="W",
                        help="resample to W columns (default: one column per frame)")
    parser.add_argument("--mode", choices=MODES, default="stripes",
                        help="stripes: the palette by share (default); dominant: the dominant colour; "
                             "average: the mean colour in linear light")


def main(args):
    """Render OUTPUT_DIR's barcode into ``args.out``.

    The frame counts come first (the checkpoint's dataset shapes, or a query per sqlite file), and place the
    columns; then the tarballs' colours are read one at a time. Memory follows one tarball and the picture,
    not the collection.

    Returns
    -------
    int
        0 when written; 1 when a tarball could not be read (it is named, and left out); 2 for a bad setting
        or nothing to render; 3 when OUTPUT_DIR cannot be read.
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
    except ValueError as error:
        log.error("%s", error)
        return EXIT_USAGE

    def render(reader, names):
        while True:
            counts = reader.frame_counts(names)
            n_frames = sum(counts.values())
            if not n_frames:
                log.error("%s holds no frames to render (tarballs: %s)", args.output_dir,
                          ", ".join(names) or "none")
                return EXIT_USAGE if not reader.damaged else EXIT_INPUT_FAILED
            width = args.width or n_frames
            builder = BarcodeBuilder(n_frames, width, args.height, args.mode, reader.clusters,
                                     titles=suffix == ".svg")
            starts = dict(zip(counts, np.cumsum([0, *counts.values()]).tolist()))
            damaged = len(reader.damaged)
            for tarball in stored.each_tarball(reader, list(counts), args.progress):
                builder.add(frame_sequence([tarball], names=suffix == ".svg"), starts[tarball.name])
            if len(reader.damaged) == damaged:
                break
            # a tarball counted but unreadable: place the columns again without it
            names = [name for name in names if name not in reader.damaged]
        if suffix == ".png" and width > WIDE:
            log.warning("one column per frame makes the picture %d pixels wide; --width W resamples to W "
                        "columns", width)
        barcode = builder.barcode()
        if suffix == ".png":
            write_atomically(args.out, png_bytes(barcode))
        else:
            write_atomically(args.out, svg_text(barcode).encode())
        log.info("wrote %s: %d frames of %d tarballs (read from the %s) in %d columns, mode %s", args.out,
                 n_frames, len(counts), reader.source, width, args.mode)

    return stored.over_selection(args.output_dir, args.tarball, render)


@dataclass
class FrameSequence:
    """Frames to render, in time order: the whole collection, or a block of it.

    Attributes
    ----------
    names : list of str, length n_frames (or empty)
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


def frame_sequence(tarballs, names=True):
    """The frames of ``tarballs`` ordered by tarball name, then member name.

    Parameters
    ----------
    tarballs : list of mpicolor.tools.stored.TarballView
    names : bool
        Make the frames' names (only the SVG shows them); False leaves ``names`` empty.

    Returns
    -------
    FrameSequence
    """
    tarballs = sorted(tarballs, key=lambda tarball: tarball.name)
    clusters = max((tarball.packed.shape[1] for tarball in tarballs), default=1)
    frame_names, packed, shares, kind, reasons = [], [], [], [], {}
    start = 0
    for tarball in tarballs:
        order = tarball.name_order()
        place = np.empty_like(order)
        place[order] = np.arange(start, start + len(order))
        reasons.update({int(place[position]): reason for position, reason in tarball.failures.items()})
        if names:
            frame_names += [f"{tarball.name}:{tarball.frames[position]}" for position in order.tolist()]
        packed.append(tarball.packed[order])
        shares.append(tarball.shares[order])
        kind.append(np.select([tarball.is_failed()[order], tarball.is_pending()[order]], [FAILED, PENDING],
                              COLOURS))
        start += len(order)
    if not start:
        return FrameSequence([], np.zeros((0, clusters), np.uint32), np.zeros((0, clusters), np.float32),
                             np.zeros(0, np.uint8), {})
    return FrameSequence(frame_names, np.concatenate(packed), np.concatenate(shares),
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


# linear light of the 256 sRGB channel values: a lookup instead of a power per colour channel of every frame
_LINEAR = srgb_to_linear(np.arange(256) / 255.0)


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
    packed : ndarray of shape (width, clusters), uint32
    shares : ndarray of shape (width, clusters), float32
        The palette of each column's frame.
    names : ndarray of shape (width, 3), object, or None
        The names of each column's first, shown and last frame (for the SVG's titles).
    reasons : dict of int to str
        Why the frames of failed columns could not be processed, by column.
    """

    colors: np.ndarray
    bounds: np.ndarray
    kind: np.ndarray
    frame: np.ndarray
    first: np.ndarray
    stop: np.ndarray
    height: int
    mode: str
    packed: np.ndarray
    shares: np.ndarray
    names: np.ndarray | None
    reasons: dict


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
    """The columns of the barcode of one sequence of frames (see :class:`BarcodeBuilder`).

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
    builder = BarcodeBuilder(len(frames.kind), width, height, mode, frames.packed.shape[1])
    builder.add(frames, 0)
    return builder.barcode()


class BarcodeBuilder:
    """The barcode of ``n_frames`` frames, fed a block of them at a time, in time order.

    Memory follows the picture's width and one block, whatever ``n_frames`` is: each column keeps the frame
    it shows and, in ``average`` mode, the running sums of its frames' colours in linear light.

    Parameters
    ----------
    n_frames : int
        Frames in all blocks together (at least one).
    width, height : int
        Columns and rows of the picture.
    mode : str
        One of ``MODES``.
    clusters : int
        Colours per frame.
    titles : bool
        Keep the frame names that the SVG's titles show.
    """

    def __init__(self, n_frames, width, height, mode, clusters, titles=True):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} should be one of {', '.join(MODES)}")
        self.height, self.mode = height, mode
        self.first, self.stop = column_ranges(n_frames, width)
        self.middle = (self.first + self.stop - 1) // 2
        # columns a block never filled (a tarball that could not be read) stay pending: transparent
        self.kind = np.full(width, PENDING, np.uint8)
        self.packed = np.zeros((width, clusters), np.uint32)
        self.shares = np.zeros((width, clusters), np.float32)
        self.names = np.full((width, 3), "", object) if titles else None
        self.reasons = {}
        # average mode: running prefix sums of the frames' linear colours and of the frames averaged, taken
        # at every column's first and stop frame; their differences are the columns' sums
        self.sum_before, self.count_before = np.zeros(3), 0
        self.sums = np.zeros((2, width, 3))
        self.counts = np.zeros((2, width), np.int64)

    def add(self, frames, start):
        """Take the frames ``[start, start + len(frames.kind))`` of the sequence.

        Parameters
        ----------
        frames : FrameSequence
            The block, in time order.
        start : int
            Its first frame's place in the whole sequence.
        """
        end = start + len(frames.kind)
        columns, local = _within(self.middle, start, end)
        self.kind[columns] = frames.kind[local]
        self.packed[columns] = frames.packed[local]
        self.shares[columns] = frames.shares[local]
        for column, frame in zip(columns.tolist(), local.tolist()):
            if frame in frames.reasons:
                self.reasons[column] = frames.reasons[frame]
        if self.names is not None:
            for slot, frame_of_column in enumerate((self.first, self.middle, self.stop - 1)):
                columns, local = _within(frame_of_column, start, end)
                self.names[columns, slot] = [frames.names[frame] for frame in local.tolist()]
        if self.mode == "average":
            per_frame, usable = _linear_per_frame(frames)
            # cumulative sums started from the previous blocks' totals are the whole sequence's, bit for bit
            sums = np.cumsum(np.concatenate([self.sum_before[None], per_frame]), axis=0)
            counts = np.cumsum(np.concatenate([[self.count_before], usable]))
            for side, edge in enumerate((self.first, self.stop)):
                columns, local = _within(edge, start, end + 1)
                self.sums[side, columns] = sums[local]
                self.counts[side, columns] = counts[local]
            self.sum_before, self.count_before = sums[-1], counts[-1]

    def barcode(self):
        """The :class:`Barcode` of the frames added."""
        width = len(self.kind)
        kind = self.kind.copy()
        columns = (self.first, self.stop, self.height, self.mode, self.packed, self.shares, self.names,
                   self.reasons)
        if self.mode == "stripes":
            totals = self.shares.astype(np.float64).sum(axis=1, keepdims=True)
            fractions = np.cumsum(self.shares, axis=1, dtype=np.float64) / np.where(totals > 0, totals, 1.0)
            bounds = np.concatenate([np.zeros((width, 1)), fractions * self.height], axis=1)
            bounds[:, -1] = self.height
            return Barcode(unpack(self.packed), bounds, kind, self.middle, *columns)
        whole = np.tile([0.0, float(self.height)], (width, 1))
        if self.mode == "dominant":
            return Barcode(unpack(self.packed[:, :1]), whole, kind, self.middle, *columns)
        count = self.counts[1] - self.counts[0]
        average = (self.sums[1] - self.sums[0]) / np.maximum(count, 1)[:, None]
        kind[count > 0] = COLOURS
        encoded = np.rint(linear_to_srgb(average) * 255).astype(np.uint8)
        return Barcode(encoded[:, None, :], whole, kind, self.middle, *columns)


def _within(frame_of_column, start, end):
    """The columns whose frame lies in ``[start, end)``, and that frame's place in the block.

    Returns
    -------
    columns, local : ndarray of shape (m,), int64
    """
    columns = np.flatnonzero((frame_of_column >= start) & (frame_of_column < end))
    return columns, frame_of_column[columns] - start


def _linear_per_frame(frames):
    """Each frame's share-weighted colour in linear light, and whether it counts in an average.

    Returns
    -------
    per_frame : ndarray of shape (n_frames, 3), float64
        Linear RGB in [0, 1]; zeros for frames that do not count.
    usable : ndarray of shape (n_frames,), bool
        Computed frames with shares.
    """
    shares = frames.shares.astype(np.float64)
    totals = shares.sum(axis=1, keepdims=True)
    weights = shares / np.where(totals > 0, totals, 1.0)
    linear = _LINEAR[unpack(frames.packed)]
    usable = (frames.kind == COLOURS) & (totals[:, 0] > 0)
    return np.einsum("nk,nkc->nc", weights, linear) * usable[:, None], usable


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


def svg_text(barcode):
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
        title = html.escape(_column_title(barcode, column))
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


def _column_title(barcode, column):
    first, stop = int(barcode.first[column]), int(barcode.stop[column])
    first_name, name, last_name = barcode.names[column]
    lines = [name]
    if stop - first > 1:
        lines.append(f"column of {stop - first} frames: {first_name} .. {last_name}")
    if barcode.kind[column] == FAILED:
        lines.append(f"failed: {barcode.reasons.get(column, 'no reason recorded')}")
    elif barcode.kind[column] == PENDING:
        lines.append("not computed yet")
    elif barcode.mode == "average":
        lines.append(f"average {hex_colour(barcode.colors[column, 0])}")
    else:
        lines += [f"{hex_colour(colour)} {100 * share:.0f}%" for colour, share in
                  zip(unpack(barcode.packed[column]), barcode.shares[column]) if share > 0]
    return "\n".join(lines)


def hex_colour(colour):
    """``#rrggbb`` of an RGB triple."""
    return "#" + "".join(f"{int(value):02x}" for value in colour)
