"""``mpicolor export``: every tarball's colours in one CSV, JSON Lines or Parquet file, for analysis elsewhere.

One record per frame, tarballs in name order and frames in tar order (``member`` is the frame's position
in its tarball, as in the sqlite files). A computed frame has ``status`` ``done`` and per colour its
values, largest share first; a failed frame has ``status`` ``failed``, its ``reason`` and no colours.
Frames still pending in a partial tarball are left out.

CSV columns: ``tarball, member, imgname, status, reason``, then ``color{k}_hex, color{k}_r, color{k}_g,
color{k}_b, share{k}`` for k = 0..K-1 (empty for a failed frame).

JSON Lines (``--format json``): one object per line and frame, ``{tarball, member, imgname, status, reason,
colors: [{hex, rgb, share}]}`` (``reason`` null when done, ``colors`` empty when failed).

Parquet: columns ``tarball, member, imgname, status, reason`` (strings, and ``member`` int64), then per
colour ``color{k}`` (int32, the packed ``R << 16 | G << 8 | B``), ``color{k}_r, color{k}_g, color{k}_b``
(int16: sums of channels do not overflow) and ``share{k}`` (float32), null for a failed frame; one row
group per block of at most ``BLOCK_ROWS`` frames of a tarball. The file's key-value metadata ``mpicolor``
holds the settings, the source and every tarball's status, as JSON.

Everything streams: a block of one tarball is read, formatted with NumPy (never a Python loop per cell)
and written before the next, so that memory follows the block, not the collection.
"""

import csv
import functools
import io
import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from mpicolor.job.exits import EXIT_USAGE
from mpicolor.job.logs import setup_logging
from mpicolor.tools import stored

log = logging.getLogger(__name__)

FORMATS = ("csv", "json", "parquet")
# frames written at a time to Parquet: bounds memory, and is the row group
BLOCK_ROWS = 1 << 18
# frames formatted at a time as text: small enough for the processor's cache, where NumPy formats fastest
TEXT_BLOCK_ROWS = 1 << 13
# shares are float32 in the results: six decimals hold all they carry
SHARE_DECIMALS = 6
PYARROW_MISSING = ("--format parquet needs pyarrow: pip install 'mpicolor[parquet]' (on Power, where PyPI has no "
                   "pyarrow wheel: conda install -c conda-forge pyarrow)")


def add_arguments(parser):
    """The flags of ``mpicolor export``."""
    stored.add_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, required=True,
                        help="csv; json (JSON Lines: one object per frame); parquet (needs pyarrow)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="write FILE (default: standard output; parquet needs a FILE)")


def main(args):
    """Write the export, a block of a tarball at a time.

    Returns
    -------
    int
        0 when written; 1 when a tarball could not be read (named, and left out); 2 for a bad setting
        (parquet without ``--out`` or without pyarrow, an unknown ``--tarball``); 3 when OUTPUT_DIR cannot
        be read.
    """
    setup_logging()
    if args.format == "parquet":
        if args.out is None:
            log.error("--format parquet needs --out FILE: Parquet is a binary file, not text for a terminal")
            return EXIT_USAGE
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            log.error("%s", PYARROW_MISSING)
            return EXIT_USAGE

    def export(reader, names):
        started = time.monotonic()
        tarballs = stored.each_tarball(reader, names, args.progress, names_as_bytes=True)
        with stored.output_stream(args.out) as stream:
            if args.format == "parquet":
                rows = write_parquet(reader, tarballs, stream)
            else:
                rows = write_text(reader, tarballs, stream, csv_bytes if args.format == "csv" else json_bytes)
        elapsed = time.monotonic() - started
        log.info("exported %d frames as %s in %.1f s (%.0f frames/s)", rows, args.format, elapsed,
                 rows / elapsed if elapsed > 0 else 0.0)

    return stored.over_selection(args.output_dir, args.tarball, export)


@dataclass
class FrameRows:
    """A block of one tarball's exported frames (computed or failed), in tar order.

    Attributes
    ----------
    tarball : str
    member : ndarray of shape (n,), int64
        The frames' positions in the tarball.
    imgname : ndarray of shape (n,), UTF-8 bytes (``S``)
    failed : ndarray of shape (n,), bool
    reason : list of str or None, length n
        Why a failed frame could not be processed; None for computed frames.
    packed : ndarray of shape (n, clusters), uint32
    shares : ndarray of shape (n, clusters), float32
    """

    tarball: str
    member: np.ndarray
    imgname: np.ndarray
    failed: np.ndarray
    reason: list
    packed: np.ndarray
    shares: np.ndarray


def frame_rows(tarball, block_rows=BLOCK_ROWS):
    """The exported frames of a tarball in blocks of at most ``block_rows``.

    Parameters
    ----------
    tarball : mpicolor.tools.stored.TarballView

    Yields
    ------
    FrameRows
    """
    failed = tarball.is_failed()
    exported = np.flatnonzero(failed | tarball.is_computed())
    frames = tarball.frames if isinstance(tarball.frames, np.ndarray) else _texts(tarball.frames)
    for begin in range(0, len(exported), block_rows):
        members = exported[begin:begin + block_rows]
        # without pending frames (most tarballs) a block is a slice of the tarball, not frames picked one by one
        picked = members if len(exported) < len(tarball.frames) else slice(begin, begin + len(members))
        block_failed = failed[picked]
        reasons = [None] * len(members)
        for row in np.flatnonzero(block_failed).tolist():
            reasons[row] = tarball.failures.get(int(members[row]), "")
        yield FrameRows(tarball.name, members, frames[picked], block_failed, reasons, tarball.packed[picked],
                        tarball.shares[picked])


def write_text(reader, tarballs, stream, format_rows):
    """Write CSV or JSON Lines a block at a time.

    Parameters
    ----------
    reader : mpicolor.tools.stored.OutputReader
    tarballs : iterator of mpicolor.tools.stored.TarballView
    stream : binary file
    format_rows : callable
        ``csv_bytes`` or ``json_bytes``; ``csv_bytes`` writes the header first.

    Returns
    -------
    int
        The frames written.
    """
    if format_rows is csv_bytes:
        stream.write(csv_header(reader.clusters))
    rows = 0
    for tarball in tarballs:
        for block in frame_rows(tarball, TEXT_BLOCK_ROWS):
            stream.write(format_rows(block, reader.clusters))
            rows += len(block.member)
    return rows


def csv_header(clusters):
    """The CSV's first line (see the module's docstring)."""
    header = ["tarball", "member", "imgname", "status", "reason"]
    for k in range(clusters):
        header += [f"color{k}_hex", f"color{k}_r", f"color{k}_g", f"color{k}_b", f"share{k}"]
    return (",".join(header) + "\n").encode()


def csv_bytes(block, clusters):
    """A block's CSV lines, as Python's ``csv.writer`` writes them, UTF-8.

    Parameters
    ----------
    block : FrameRows
    clusters : int
        Colour columns of the file: a block with fewer colours leaves the others empty.

    Returns
    -------
    bytes
    """
    fields = [_csv_cell(block.tarball).encode() + b",", _digits(block.member), b",", _csv_cells(block.imgname),
              b",", _STATUS_TEXT[block.failed.astype(np.intp)], b",",
              _failure_texts(block, lambda reasons: _csv_cells(_texts(reasons)), empty=b"")]
    for k in range(clusters):
        if k >= block.packed.shape[1]:
            fields.append(b"," * 5)
            continue
        colour = [*_hex_text(block.packed[:, k], b","), *_rgb_text(block.packed[:, k], (b",", b",", b",")), b",",
                  _share_text(block.shares[:, k])]
        # a failed frame's colour cells are empty: their commas stay
        fields += _blank_rows(colour, block.failed, (b",", b"", b"", b"", b",", b",", b",", None, b""))
    return _text_rows(fields + [b"\n"], len(block.member))


def json_bytes(block, clusters):
    """A block's JSON Lines: each line as ``json.dumps`` writes the frame's object (see the module's docstring).

    Parameters
    ----------
    block : FrameRows
    clusters : int
        Unused: a frame lists the colours it has.

    Returns
    -------
    bytes
    """
    fields = [b'{"tarball": ' + _json_string(block.tarball).encode() + b', "member": ', _digits(block.member),
              b', "imgname": ', _texts([_json_string(name.decode()) for name in block.imgname.tolist()]),
              b', "status": ',
              _JSON_STATUS_TEXT[block.failed.astype(np.intp)], b', "reason": ',
              _failure_texts(block, lambda reasons: _texts(list(map(_json_string, reasons))), empty=b"null"),
              b', "colors": [']
    for k in range(block.packed.shape[1]):
        colour = [*_hex_text(block.packed[:, k], b', {"hex": "' if k else b'{"hex": "'),
                  *_rgb_text(block.packed[:, k], (b'", "rgb": [', b", ", b", ")), b'], "share": ',
                  _share_text(block.shares[:, k]), b"}"]
        fields += _blank_rows(colour, block.failed, [b""] * len(colour))
    return _text_rows(fields + [b"]}\n"], len(block.member))


def _failure_texts(block, encode, empty):
    """The reasons of a block's failed frames encoded by ``encode``, ``empty`` for its computed frames."""
    failed = np.flatnonzero(block.failed)
    if not len(failed):
        return empty
    encoded = encode([block.reason[row] for row in failed.tolist()])
    texts = np.full(len(block.member), empty, dtype=f"S{max(encoded.dtype.itemsize, len(empty), 1)}")
    texts[failed] = encoded
    return texts


def write_parquet(reader, tarballs, stream):
    """Write Parquet a block at a time, one row group each (see the module's docstring).

    Parameters
    ----------
    reader : mpicolor.tools.stored.OutputReader
    tarballs : iterator of mpicolor.tools.stored.TarballView
    stream : binary file

    Returns
    -------
    int
        The frames written.
    """
    import pyarrow.parquet

    schema = parquet_schema(reader.clusters)
    statuses, rows = [], 0
    # dictionary pages for the strings that repeat; names and colours are mostly distinct
    with pyarrow.parquet.ParquetWriter(stream, schema, use_dictionary=["tarball", "status", "reason"]) as writer:
        for tarball in tarballs:
            statuses.append({"name": tarball.name, "status": tarball.status})
            for block in frame_rows(tarball):
                writer.write_table(arrow_table(block, schema))
                rows += len(block.member)
        writer.add_key_value_metadata({"mpicolor": json.dumps(
            {"source": reader.source, "settings": reader.settings, "tarballs": statuses})})
    return rows


def parquet_schema(clusters):
    """The Parquet file's columns (see the module's docstring).

    Returns
    -------
    pyarrow.Schema
    """
    import pyarrow

    fields = [("tarball", pyarrow.string()), ("member", pyarrow.int64()), ("imgname", pyarrow.string()),
              ("status", pyarrow.string()), ("reason", pyarrow.string())]
    for k in range(clusters):
        fields += [(f"color{k}", pyarrow.int32()), *[(f"color{k}_{c}", pyarrow.int16()) for c in "rgb"],
                   (f"share{k}", pyarrow.float32())]
    return pyarrow.schema(fields)


def arrow_table(block, schema):
    """A block as a table of ``schema`` (:func:`parquet_schema`).

    Returns
    -------
    pyarrow.Table
    """
    import pyarrow
    import pyarrow.compute

    n_rows = len(block.member)
    failed = block.failed if block.failed.any() else None
    columns = [pyarrow.repeat(pyarrow.scalar(block.tarball), n_rows), pyarrow.array(block.member),
               _arrow_strings(block.imgname),
               pyarrow.compute.if_else(pyarrow.array(block.failed), "failed", "done"),
               pyarrow.array(block.reason, pyarrow.string())]
    for k in range((len(schema) - len(columns)) // 5):
        if k >= block.packed.shape[1]:
            columns += [pyarrow.nulls(n_rows, schema.field(len(columns) + i).type) for i in range(5)]
            continue
        packed = block.packed[:, k]
        channels = [((packed >> shift) & 0xFF).astype(np.int16) for shift in (16, 8, 0)]
        columns += [pyarrow.array(values, mask=failed) for values in
                    (packed.astype(np.int32), *channels, block.shares[:, k])]
    return pyarrow.Table.from_arrays(columns, schema=schema)


def _texts(strings):
    """Strings as UTF-8, an array of shape (n,) of NUL-padded bytes."""
    return np.array([text.encode() for text in strings], dtype=bytes)


def _arrow_strings(texts):
    """UTF-8 ``S`` items (`_texts`) as a pyarrow string array, built from their bytes without a Python object
    per item (names hold no NUL, so the NULs are the padding)."""
    import pyarrow

    characters = texts.view(np.uint8).reshape(len(texts), texts.dtype.itemsize)
    present = characters != 0
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(present.sum(axis=1), out=offsets[1:])
    return pyarrow.LargeStringArray.from_buffers(len(texts), pyarrow.py_buffer(offsets),
                                                 pyarrow.py_buffer(characters[present])).cast(pyarrow.string())


def _csv_cells(cells):
    """UTF-8 ``S`` items (`_texts`) as CSV cells (quoted where ``csv.writer`` quotes them), an array of
    shape (n,) of bytes."""
    characters = cells.view(np.uint8).reshape(len(cells), cells.dtype.itemsize)
    special = np.zeros(len(cells), bool)
    for character in b',"\r\n':
        special |= (characters == character).any(axis=1)
    if not special.any():
        return cells
    encoded = cells.tolist()
    for row in np.flatnonzero(special).tolist():
        encoded[row] = _csv_cell(encoded[row].decode()).encode()
    return np.array(encoded, dtype=bytes)


def _csv_cell(text):
    """``text`` as ``csv.writer`` writes it in a row of several cells (quoted when it must be)."""
    stream = io.StringIO()
    csv.writer(stream, lineterminator="\n").writerow([text, ""])
    return stream.getvalue()[:-2]


def _digits(values):
    """Non-negative integers in decimal, an array of shape (n,) of bytes (NUL-padded on the left)."""
    values = np.asarray(values, np.int64)
    width = len(str(int(values.max(initial=0))))
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)
    # leading zeros are padding, except the last digit of 0
    digits[(values[:, None] < powers) & (powers > 1)] = 0
    return digits.view(f"S{width}")[:, 0]


def _hex_text(packed, prefix):
    """``prefix`` and packed colours as ``#rrggbb``: fields of :func:`_text_rows`."""
    packed = np.asarray(packed, np.uint32)
    return [prefix + b"#", *(_HEX_PAIRS[(packed >> shift) & 0xFF] for shift in (16, 8, 0))]


def _rgb_text(packed, prefixes):
    """The decimal R, G and B of packed colours, each after its prefix: three arrays of shape (n,) of bytes."""
    packed = np.asarray(packed, np.uint32)
    return [_byte_table(prefix)[(packed >> shift) & 0xFF] for prefix, shift in zip(prefixes, (16, 8, 0))]


@functools.lru_cache
def _byte_table(prefix):
    """``prefix`` and the decimal text of 0..255, an array of shape (256,) of bytes."""
    return np.array([prefix + str(value).encode() for value in range(256)], dtype=bytes)


def _share_text(shares):
    """Shares as ``repr(round(share, 6))``, an array of shape (n,) of bytes.

    Shares in [0, 1] come from a table of the million and one six-decimal values; the few that are not in it
    or lie within rounding error of a tie between two table entries are formatted by Python itself.
    """
    scaled = np.asarray(shares, np.float64) * 10 ** SHARE_DECIMALS
    nearest = np.rint(scaled)
    exact = (np.abs(scaled - nearest) < 0.5 - 1e-6) & (nearest >= 0) & (nearest <= 10 ** SHARE_DECIMALS)
    text = _share_table()[np.where(exact, nearest, 0).astype(np.int64)]
    if exact.all():
        return text
    others = {row: repr(round(float(shares[row]), SHARE_DECIMALS)).encode() for row in np.flatnonzero(~exact)}
    text = text.astype(f"S{max(text.dtype.itemsize, *map(len, others.values()))}")
    for row, value in others.items():
        text[row] = value
    return text


_SHARE_TABLE = []


def _share_table():
    """``repr(m / 10**6)`` for m = 0..10**6 as bytes, made once (0.3 s)."""
    if not _SHARE_TABLE:
        _SHARE_TABLE.append(np.array([repr(m / 10 ** SHARE_DECIMALS).encode()
                                      for m in range(10 ** SHARE_DECIMALS + 1)], dtype=bytes))
    return _SHARE_TABLE[0]


def _blank_rows(fields, blank, empties):
    """``fields`` with the rows where ``blank`` is True replaced by the field's text in ``empties`` (None: kept)."""
    if not blank.any():
        return fields
    return [field if empty is None else np.where(blank, empty, field) for field, empty in zip(fields, empties)]


def _text_rows(fields, n_rows):
    """Fields side by side, row by row, as one byte string; NUL bytes (padding, emptied fields) are dropped.

    Parameters
    ----------
    fields : list of bytes or ndarray of shape (n_rows,) of bytes
        bytes: the same in every row.
    n_rows : int

    Returns
    -------
    bytes
    """
    fields = [np.bytes_(field) if isinstance(field, bytes) else field for field in fields]
    # one record per row with a field per piece: each piece is copied in one strided pass
    rows = np.empty(n_rows, np.dtype([(f"f{number}", field.dtype) for number, field in enumerate(fields)]))
    for number, field in enumerate(fields):
        rows[f"f{number}"] = field
    return rows.tobytes().translate(None, b"\0")


_json_string = json.encoder.encode_basestring_ascii
_HEX_PAIRS = np.array([f"{value:02x}".encode() for value in range(256)])
_STATUS_TEXT = np.array([b"done", b"failed"])
_JSON_STATUS_TEXT = np.array([b'"done"', b'"failed"'])
