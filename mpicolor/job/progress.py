"""Rank 0's progress display: a live bar on a terminal, a log line every few seconds in a batch job."""

import logging
import sys
import time
from datetime import timedelta

log = logging.getLogger(__name__)


def format_duration(seconds):
    """``1:02:03`` style, whole seconds; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    return str(timedelta(seconds=round(seconds)))


class Progress:
    """Shows tarball n/m, frames done, frames/s and ETA.

    Parameters
    ----------
    n_tarballs : int
        Tarballs in the run.
    stream : file
        Where the bar goes when it is a terminal (stderr).
    interval : float or None
        Seconds between updates; None: 0.5 s for the bar, 10 s for log lines.
    mode : str
        ``"bar"``, ``"log"``, or ``"auto"``: the bar when ``stream`` is a terminal. Under ``mpiexec`` a rank's
        stderr is a pipe to the launcher even when the launcher runs on a terminal, so ``auto`` gives log
        lines there; ``bar`` asks for the bar anyway (the launcher forwards it).
    """

    def __init__(self, n_tarballs, stream=None, interval=None, clock=time.monotonic, mode="auto"):
        self.stream = stream or sys.stderr
        self.live = mode == "bar" or (mode == "auto" and self.stream.isatty())
        self.interval = interval if interval is not None else (0.5 if self.live else 10.0)
        self.clock = clock
        self.started = clock()
        self.last_shown = self.started
        self.n_tarballs = n_tarballs
        self.shown = False

    def line(self, tarballs_done, frames_done, frames_total):
        """The status text; ``frames_total`` may be an estimate (tarballs are indexed as they come)."""
        elapsed = self.clock() - self.started
        rate = frames_done / elapsed if elapsed > 0 else 0.0
        remaining = max(frames_total - frames_done, 0)
        eta = remaining / rate if rate > 0 else None
        return (f"data set {tarballs_done}/{self.n_tarballs}, frames {frames_done}/{frames_total}, "
                f"{rate:.1f} frames/s, elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}")

    def update(self, tarballs_done, frames_done, frames_total, force=False):
        """Show the status if the interval has passed (or ``force``); return whether it was shown."""
        now = self.clock()
        if not force and now - self.last_shown < self.interval:
            return False
        self.last_shown = now
        self.shown = True
        text = self.line(tarballs_done, frames_done, frames_total)
        if self.live:
            fraction = frames_done / frames_total if frames_total else 1.0
            filled = int(30 * min(fraction, 1.0))
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text} ")
            self.stream.flush()
        else:
            log.info("%s", text)
        return True

    def close(self):
        """End the live bar's line, if it was shown."""
        if self.live and self.shown:
            self.stream.write("\n")
            self.stream.flush()
