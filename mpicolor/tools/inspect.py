"""``mpicolor inspect``: what an OUTPUT_DIR holds, as text for people or JSON for scripts.

Tarballs by status (complete, partial, incomplete, unreadable), frames computed / failed / pending, every
failure with its reason, the settings, the backends that computed the frames, and the last run's
throughput from ``run-summary.json``.
"""

import json
import logging
from collections.abc import Iterator

from mpicolor.job.logs import setup_logging
from mpicolor.job.progress import format_duration
from mpicolor.state.results import COMPLETE, INCOMPLETE, PARTIAL, UNREADABLE
from mpicolor.tools import stored

log = logging.getLogger(__name__)

STATUSES = (COMPLETE, PARTIAL, INCOMPLETE, UNREADABLE)
# failures listed per tarball in the text report; --json lists all
SHOWN_FAILURES = 10


def add_arguments(parser):
    """The flags of ``mpicolor inspect``."""
    stored.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def main(args):
    """Print the report on stdout, reading one tarball at a time.

    Returns
    -------
    int
        0 when OUTPUT_DIR could be read; 1 when a tarball could not be (it is named, the others reported);
        2 for an unknown ``--tarball``; 3 when OUTPUT_DIR cannot be read.
    """
    setup_logging()

    def report(reader, names):
        tarballs = map(_tarball_report, stored.each_tarball(reader, names, args.progress))
        with stored.output_stream(None) as stream:
            (write_json if args.json else write_text)(reader, tarballs, stream)

    return stored.over_selection(args.output_dir, args.tarball, report)


def write_json(reader, tarballs, stream):
    """Write the report as one JSON document, a tarball at a time.

    The document: ``output_dir``, ``source`` (``checkpoint`` or ``sqlite``), ``settings``, ``tarballs`` (one
    dict per tarball: name, status, frames, computed, failed, pending, backends, skipped, incomplete, error,
    sqlite, failures as ``{member, imgname, reason}``, notes as ``{member, imgname, note}``), ``totals``
    (tarballs per status, frames, computed, failed, pending, backends), ``last_run`` (wall seconds, frames,
    frames/s, per-rank numbers; None without ``run-summary.json``) and, only when a tarball could not be
    read, ``damaged`` (its name and why).

    Parameters
    ----------
    reader : mpicolor.tools.stored.OutputReader
    tarballs : iterator of dict
        The tarballs' reports.
    stream : binary file
    """
    totals = Totals()
    fields = [("output_dir", reader.output_dir), ("source", reader.source), ("settings", reader.settings),
              ("tarballs", map(totals.add, tarballs)), ("totals", totals.document),
              ("last_run", lambda: _last_run(reader.run_summary))]
    _write_json_fields(stream, fields)
    if reader.damaged:
        stream.write(b",\n \"damaged\": " + _indented(reader.damaged, 1).encode())
    stream.write(b"\n}\n")


def _indented(value, level):
    """``json.dumps(value, indent=1)`` placed ``level`` levels deep in a document."""
    return json.dumps(value, indent=1).replace("\n", "\n" + " " * level)


def _write_json_fields(stream, fields):
    """Write ``json.dumps(dict(fields), indent=1)`` without its closing brace, a piece at a time: an iterator
    value is written item by item, a callable value is called when its turn comes."""
    stream.write(b"{")
    for number, (key, value) in enumerate(fields):
        stream.write(f"{',' if number else ''}\n {json.dumps(key)}: ".encode())
        value = value() if callable(value) else value
        if not isinstance(value, Iterator):
            stream.write(_indented(value, 1).encode())
            continue
        count = 0
        for count, item in enumerate(value, 1):
            stream.write(f"{'[' if count == 1 else ','}\n  {_indented(item, 2)}".encode())
        stream.write(b"\n ]" if count else b"[]")


def write_text(reader, tarballs, stream):
    """Write the report as lines of text for a terminal: the totals first, then a line per tarball with its
    first ``SHOWN_FAILURES`` failures."""
    totals = Totals()
    tarball_lines = [line for tarball in tarballs for line in _tarball_lines(totals.add(tarball))]
    tarball_lines += [f"  {name}: cannot be read ({why})" for name, why in sorted(reader.damaged.items())]
    document = {"output_dir": reader.output_dir, "source": reader.source, "settings": reader.settings,
                "totals": totals.document(), "last_run": _last_run(reader.run_summary)}
    stream.write("\n".join(summary_lines(document) + tarball_lines).encode() + b"\n")


class Totals:
    """The report's ``totals``, added up a tarball at a time."""

    def __init__(self):
        self.counts = {"tarballs": 0, **{status: 0 for status in STATUSES},
                       **{key: 0 for key in ("frames", "computed", "failed", "pending")}}
        self.backends = {}

    def add(self, tarball):
        """Count one tarball's report; returns it."""
        self.counts["tarballs"] += 1
        if tarball["status"] in STATUSES:
            self.counts[tarball["status"]] += 1
        for key in ("frames", "computed", "failed", "pending"):
            self.counts[key] += tarball[key]
        for name, count in tarball["backends"].items():
            self.backends[name] = self.backends.get(name, 0) + count
        return tarball

    def document(self):
        return {**self.counts, "backends": self.backends}


def _tarball_report(tarball):
    return {
        "name": tarball.name, "status": tarball.status, "frames": len(tarball.frames),
        "computed": int(tarball.is_computed().sum()), "failed": int(tarball.is_failed().sum()),
        "pending": int(tarball.is_pending().sum()), "backends": tarball.backends(), "skipped": tarball.skipped,
        "incomplete": tarball.incomplete, "error": tarball.error, "sqlite": tarball.sqlite,
        "failures": [{"member": member, "imgname": tarball.frames[member], "reason": reason}
                     for member, reason in sorted(tarball.failures.items())],
        "notes": [{"member": member, "imgname": tarball.frames[member], "note": note}
                  for member, note in sorted(tarball.notes.items())],
    }


def _last_run(summary):
    if summary is None:
        return None
    wall = summary.get("wall") or 0.0
    frames = summary.get("frames") or 0
    return {"wall": wall, "frames": frames, "frames_per_second": frames / wall if wall > 0 else None,
            "ranks": summary.get("ranks", {})}


def summary_lines(document):
    """The report's first lines for a terminal: settings, totals and the last run."""
    totals = document["totals"]
    lines = [f"{document['output_dir']} (read from the {document['source']})"]
    if document["settings"]:
        settings = sorted(document["settings"].items())
        lines.append("settings: " + ", ".join(f"{key}={value}" for key, value in settings))
    lines.append(f"tarballs: {totals['tarballs']} (" + ", ".join(f"{totals[s]} {s}" for s in STATUSES) + ")")
    backends = ", ".join(f"{name} {count}" for name, count in sorted(totals["backends"].items())) or "none"
    lines.append(f"frames: {totals['frames']} ({totals['computed']} computed, {totals['failed']} failed, "
                 f"{totals['pending']} pending); backends: {backends}")
    run = document["last_run"]
    if run is not None:
        rate = f"{run['frames_per_second']:.1f} frames/s" if run["frames_per_second"] else "no frames/s"
        lines.append(f"last run: {run['frames']} frames in {format_duration(run['wall'])}, {rate}, "
                     f"{len(run['ranks'])} ranks")
        for rank, stats in sorted(run["ranks"].items(), key=lambda item: int(item[0])):
            busy = stats.get("busy") or 0.0
            lines.append(f"  rank {rank}: {stats.get('frames', 0)} frames, "
                         f"{stats.get('frames', 0) / busy if busy > 0 else 0:.1f} frames/s while busy")
    return lines


def _tarball_lines(tarball):
    """A tarball's line of the text report, and its first failures."""
    text = (f"  {tarball['name']}: {tarball['status']}, {tarball['frames']} frames, {tarball['computed']} "
            f"computed, {tarball['failed']} failed, {tarball['pending']} pending")
    if tarball["notes"]:
        text += f", {len(tarball['notes'])} frames with notes (--json lists them)"
    if tarball["skipped"]:
        skipped = sorted(tarball["skipped"].items())
        text += ", skipped " + ", ".join(f"{count} {kind}" for kind, count in skipped)
    for why in (tarball["incomplete"], tarball["error"]):
        if why:
            text += f" ({why})"
    lines = [text]
    for failure in tarball["failures"][:SHOWN_FAILURES]:
        lines.append(f"    failed #{failure['member']} {failure['imgname']}: {failure['reason']}")
    hidden = len(tarball["failures"]) - SHOWN_FAILURES
    if hidden > 0:
        lines.append(f"    ... and {hidden} more failures (--json lists all)")
    return lines
