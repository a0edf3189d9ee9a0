"""``mpicolor export``: every tarball's colours in one CSV or JSON file, for people who never open sqlite.

One record per frame, tarballs in name order and frames in tar order (``member`` is the frame's position
in its tarball, as in the sqlite files). A computed frame has ``status`` ``done`` and per colour its hex
code, R, G, B and share, largest share first; a failed frame has ``status`` ``failed`` and its ``reason``.
Frames still pending in a partial tarball are left out.

CSV columns: ``tarball, member, imgname, status, reason``, then ``color{k}_hex, color{k}_r, color{k}_g,
color{k}_b, share{k}`` for k = 0..K-1. JSON: ``{"source", "settings", "tarballs": [{name, status}],
"frames": [{tarball, member, imgname, status, reason, colors: [{hex, rgb, share}]}]}``.
"""

import csv
import io
import json
import logging

from mpicolor import results
from mpicolor.logs import setup_logging
from mpicolor.render import hex_colour, unpack

log = logging.getLogger(__name__)

FORMATS = ("csv", "json")
# shares are float32 in the results: six decimals hold all they carry
SHARE_DECIMALS = 6


def add_arguments(parser):
    """The flags of ``mpicolor export``."""
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the OUTPUT_DIR of `mpicolor run`")
    parser.add_argument("--format", choices=FORMATS, required=True, help="csv or json")
    parser.add_argument("--out", default=None, metavar="FILE", help="write FILE (default: standard output)")


def main(args):
    """Write the export.

    Returns
    -------
    int
        0 when written, 3 when OUTPUT_DIR cannot be read.
    """
    setup_logging()
    view = results.load_for_command(args.output_dir)
    if view is None:
        return results.EXIT_NO_RESULTS
    results.emit(csv_text(view) if args.format == "csv" else json.dumps(json_document(view), indent=1) + "\n",
                 args.out)
    return 0


def frame_records(view):
    """One dict per computed or failed frame, tarballs in name order, frames in tar order.

    Parameters
    ----------
    view : mpicolor.results.OutputView

    Yields
    ------
    dict
        ``tarball``, ``member``, ``imgname``, ``status`` (``done`` or ``failed``), ``reason`` (None when done)
        and ``colors``: list of ``{hex, rgb, share}``, largest share first (empty when failed).
    """
    for tarball in view.tarballs:
        colours = unpack(tarball.packed)
        failed, computed = tarball.is_failed(), tarball.is_computed()
        for member in range(len(tarball.frames)):
            record = {"tarball": tarball.name, "member": member, "imgname": tarball.frames[member]}
            if failed[member]:
                yield dict(record, status="failed", reason=tarball.failures.get(member, ""), colors=[])
            elif computed[member]:
                yield dict(record, status="done", reason=None, colors=[
                    {"hex": hex_colour(rgb), "rgb": [int(value) for value in rgb],
                     "share": round(float(share), SHARE_DECIMALS)}
                    for rgb, share in zip(colours[member], tarball.shares[member])])


def json_document(view):
    """The JSON export (see the module's docstring)."""
    return {"source": view.source, "settings": view.settings,
            "tarballs": [{"name": tarball.name, "status": tarball.status} for tarball in view.tarballs],
            "frames": list(frame_records(view))}


def csv_text(view):
    """The CSV export: a header, then one row per frame (see the module's docstring)."""
    clusters = max((tarball.packed.shape[1] for tarball in view.tarballs), default=0)
    header = ["tarball", "member", "imgname", "status", "reason"]
    for k in range(clusters):
        header += [f"color{k}_hex", f"color{k}_r", f"color{k}_g", f"color{k}_b", f"share{k}"]
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    for record in frame_records(view):
        row = [record["tarball"], record["member"], record["imgname"], record["status"], record["reason"] or ""]
        for colour in record["colors"]:
            row += [colour["hex"], *colour["rgb"], colour["share"]]
        writer.writerow(row + [""] * (len(header) - len(row)))
    return stream.getvalue()
