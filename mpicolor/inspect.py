"""``mpicolor inspect``: what an OUTPUT_DIR holds, as text for people or JSON for scripts.

Tarballs by status (complete, partial, incomplete, unreadable), frames computed / failed / pending, every
failure with its reason, the settings, the backends that computed the frames, and the last run's
throughput from ``run-summary.json``.
"""

import json
import logging

from mpicolor import results
from mpicolor.state.results import COMPLETE, INCOMPLETE, PARTIAL, UNREADABLE
from mpicolor.logs import setup_logging
from mpicolor.progress import format_duration

log = logging.getLogger(__name__)

STATUSES = (COMPLETE, PARTIAL, INCOMPLETE, UNREADABLE)
# failures listed per tarball in the text report; --json lists all
SHOWN_FAILURES = 10


def add_arguments(parser):
    """The flags of ``mpicolor inspect``."""
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the OUTPUT_DIR of `mpicolor run`")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def main(args):
    """Print the report on stdout.

    Returns
    -------
    int
        0 when OUTPUT_DIR could be read, 3 when it cannot.
    """
    setup_logging()
    view = results.load_for_command(args.output_dir)
    if view is None:
        return results.EXIT_NO_RESULTS
    document = report(view)
    results.emit(json.dumps(document, indent=1) + "\n" if args.json else "\n".join(text_lines(document)) + "\n",
                 None)
    return 0


def report(view):
    """What OUTPUT_DIR holds, as a JSON-ready document.

    Parameters
    ----------
    view : mpicolor.results.OutputView

    Returns
    -------
    dict
        ``output_dir``, ``source`` (``checkpoint`` or ``sqlite``), ``settings``, ``tarballs`` (one dict per
        tarball: name, status, frames, computed, failed, pending, backends, skipped, incomplete, error, sqlite,
        failures as ``{member, imgname, reason}``, notes as ``{member, imgname, note}``), ``totals``
        (tarballs per status, frames, computed, failed, pending, backends) and ``last_run`` (wall seconds,
        frames, frames/s, per-rank numbers; None without ``run-summary.json``).
    """
    tarballs = [_tarball_report(tarball) for tarball in view.tarballs]
    backends = {}
    for tarball in tarballs:
        for name, count in tarball["backends"].items():
            backends[name] = backends.get(name, 0) + count
    totals = {"tarballs": len(tarballs)}
    totals.update({status: sum(t["status"] == status for t in tarballs) for status in STATUSES})
    totals.update({key: sum(t[key] for t in tarballs) for key in ("frames", "computed", "failed", "pending")})
    totals["backends"] = backends
    return {"output_dir": view.output_dir, "source": view.source, "settings": view.settings,
            "tarballs": tarballs, "totals": totals, "last_run": _last_run(view.run_summary)}


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


def text_lines(document):
    """The report as lines of text for a terminal."""
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
    for tarball in document["tarballs"]:
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
        lines.append(text)
        for failure in tarball["failures"][:SHOWN_FAILURES]:
            lines.append(f"    failed #{failure['member']} {failure['imgname']}: {failure['reason']}")
        hidden = len(tarball["failures"]) - SHOWN_FAILURES
        if hidden > 0:
            lines.append(f"    ... and {hidden} more failures (--json lists all)")
    return lines
