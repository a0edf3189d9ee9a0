"""Rank 0's writes in a thread of their own, so that coordinating never waits for the disk.

A batch is a checkpoint save (the tarballs that changed) followed by the sqlite files of the tarballs it
completes: in that order, so that a sqlite file on disk always has its tarball complete in the checkpoint.
One batch is in flight at a time; while it is, the coordinator gathers the next one. The thread calls no MPI.
"""

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mpicolor.state.sqlite import write_sqlite_files

# batch durations the run summary keeps, at the start and at the end of a run
SAVES_KEPT = 50


@dataclass
class SaveTimes:
    """Durations of the batches written: how many, in all, and those at the start and at the end of the run."""

    count: int = 0
    seconds: float = 0.0
    first: list = field(default_factory=list)
    last: deque = field(default_factory=lambda: deque(maxlen=SAVES_KEPT))

    def add(self, seconds):
        self.count += 1
        self.seconds += seconds
        if len(self.first) < SAVES_KEPT:
            self.first.append(seconds)
        self.last.append(seconds)

    def document(self):
        """The numbers as a JSON-ready dict."""
        return {"count": self.count, "seconds": self.seconds, "first": self.first, "last": list(self.last)}


class StateWriter:
    """Writes batches of results into OUTPUT_DIR in a background thread, one batch at a time.

    Parameters
    ----------
    checkpoint : mpicolor.state.checkpoint.Checkpoint
        The open checkpoint; only this thread saves into it while a batch is in flight.
    output_dir, label : str
        Where the sqlite files go and the ``{label}`` of their names.
    settings : dict
        The run's settings, stored with every file.
    input_dir : str
        The run's INPUT_DIR, recorded in the checkpoint.
    """

    def __init__(self, checkpoint, output_dir, label, settings, input_dir):
        self.checkpoint = checkpoint
        self.output_dir, self.label, self.settings, self.input_dir = output_dir, label, settings, input_dir
        self.times = SaveTimes()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mpicolor-writer")
        self.in_flight = None

    def busy(self):
        """True while a batch is being written; raises the error of a batch that failed (e.g. a full disk)."""
        if self.in_flight is None:
            return False
        if not self.in_flight.done():
            return True
        self.wait()
        return False

    def submit(self, changed, complete):
        """Start writing a batch; call only when not :meth:`busy`.

        Parameters
        ----------
        changed : list of TarballResults
            To save into the checkpoint; none may change while it is written (give copies of the partial ones).
        complete : list of TarballResults
            Among them, those whose sqlite file is to be written after the checkpoint.
        """
        self.in_flight = self.pool.submit(self._write, changed, complete)

    def _write(self, changed, complete):
        started = time.perf_counter()
        self.checkpoint.save(self.settings, changed, self.input_dir)
        write_sqlite_files(self.output_dir, self.label, complete, self.settings)
        self.times.add(time.perf_counter() - started)

    def wait(self):
        """Wait for the batch in flight, if any; raises its error."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is not None:
            in_flight.result()

    def close(self):
        """Wait for the batch in flight and end the thread."""
        try:
            self.wait()
        finally:
            self.pool.shutdown()
