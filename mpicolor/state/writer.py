"""Rank 0's writes in a thread of their own, so that coordinating never waits for the disk.

A batch is a checkpoint save (the tarballs that changed), then the sqlite files of tarballs already complete
in the checkpoint, this save included: in that order, so that a sqlite file on disk always has its tarball
complete in the checkpoint. The complete tarballs whose sqlite files a batch did not write are reported back,
for workers to write (:func:`~mpicolor.state.sqlite.write_sqlite_from_checkpoint`). One batch is in flight at a
time; while it is, the coordinator gathers the next one. The thread calls no MPI.
"""

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mpicolor.state.results import COMPLETE
from mpicolor.state.sqlite import write_sqlite_from_checkpoint

# batch durations the run summary keeps, at the start and at the end of a run
SAVES_KEPT = 50


@dataclass
class SaveTimes:
    """Durations of the batches written: how many, in all, and those at the start and at the end of the run;
    and the processor seconds the writer's thread spent on them (part of rank 0's)."""

    count: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    first: list = field(default_factory=list)
    last: deque = field(default_factory=lambda: deque(maxlen=SAVES_KEPT))

    def add(self, seconds, cpu):
        self.count += 1
        self.seconds += seconds
        self.cpu += cpu
        if len(self.first) < SAVES_KEPT:
            self.first.append(seconds)
        self.last.append(seconds)

    def document(self):
        """The numbers as a JSON-ready dict."""
        return {"count": self.count, "seconds": self.seconds, "cpu_s": self.cpu, "first": self.first,
                "last": list(self.last)}


class StateWriter:
    """Writes batches of results into OUTPUT_DIR in a background thread, one batch at a time.

    Parameters
    ----------
    checkpoint : mpicolor.state.checkpoint.Checkpoint
        The open checkpoint; only this thread saves into it while a batch is in flight.
    output_dir : str
        Where the sqlite files go.
    settings : dict
        The run's settings, stored with every file (``label`` names the sqlite files).
    input_dir : str
        The run's INPUT_DIR, recorded in the checkpoint.

    Attributes
    ----------
    saved_complete : list of str
        Tarballs complete in the checkpoint whose sqlite files the batches written so far did not write.
    """

    def __init__(self, checkpoint, output_dir, settings, input_dir):
        self.checkpoint = checkpoint
        self.output_dir, self.settings, self.input_dir = output_dir, settings, input_dir
        self.times = SaveTimes()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mpicolor-writer")
        self.in_flight = None
        self.saved_complete = []

    def busy(self):
        """True while a batch is being written; raises the error of a batch that failed (e.g. a full disk)."""
        if self.in_flight is None:
            return False
        if not self.in_flight.done():
            return True
        self.wait()
        return False

    def submit(self, changed, sqlite_names, index=True):
        """Start writing a batch; call only when not :meth:`busy`.

        Parameters
        ----------
        changed : list of TarballResults
            To save into the checkpoint; none may change while it is written (give copies of the partial ones).
        sqlite_names : list of str
            Tarballs complete in the checkpoint once ``changed`` is saved, whose sqlite files to write then.
        index : bool
            Bring the checkpoint's index up to date too (see :meth:`~mpicolor.state.checkpoint.Checkpoint.save`).
        """
        self.in_flight = self.pool.submit(self._write, changed, sqlite_names, index)

    def _write(self, changed, sqlite_names, index):
        started, cpu = time.perf_counter(), time.thread_time()
        self.checkpoint.save(self.settings, changed, self.input_dir, index)
        write_sqlite_from_checkpoint(self.output_dir, sqlite_names, self.settings)
        self.times.add(time.perf_counter() - started, time.thread_time() - cpu)
        return [results.name for results in changed if results.status == COMPLETE and results.name not in sqlite_names]

    def wait(self):
        """Wait for the batch in flight, if any; raises its error."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is not None:
            self.saved_complete += in_flight.result()

    def close(self):
        """Wait for the batch in flight and end the thread."""
        try:
            self.wait()
        finally:
            self.pool.shutdown()
