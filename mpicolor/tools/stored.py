"""Read what a run left in OUTPUT_DIR for ``inspect``, ``render`` and ``export``, one tarball at a time.

The HDF5 checkpoint holds every tarball, finished or not, and is read first. Without a readable checkpoint
(copied results, a deleted checkpoint) the ``hist_*.sqlite`` files are read instead; they exist only for
finished tarballs and do not record which backend computed a frame. Either way a tool holds one tarball's
results at a time, so that its memory follows the largest tarball, not the collection.
"""

import contextlib
import dataclasses
import itertools
import json
import logging
import operator
import os
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mpicolor.job.exits import EXIT_INPUT_FAILED, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE
from mpicolor.job.progress import Progress
from mpicolor.state import results as model
from mpicolor.state.atomic import publish, temporary_path
from mpicolor.state.checkpoint import CHECKPOINT, CheckpointReader
from mpicolor.state.output_dir import RUN_SUMMARY, OutputError
from mpicolor.state.resume import STORED_SETTINGS
from mpicolor.state.sqlite import read_sqlite, read_sqlite_info, sqlite_files, sqlite_frame_count, sqlite_name

log = logging.getLogger(__name__)

SOURCE_CHECKPOINT, SOURCE_SQLITE = "checkpoint", "sqlite"
# what reading one tarball of a damaged checkpoint or sqlite file raises
READ_ERRORS = (OSError, KeyError, ValueError, sqlite3.DatabaseError)


@dataclass
class TarballView(model.TarballResults):
    """One tarball's results (the checkpoint's :class:`~mpicolor.state.results.TarballResults`), whichever file they
    were read from.

    Attributes
    ----------
    backend : ndarray of shape (n_frames,), uint8
        ``PENDING``, ``CPU``, ``GPU``, ``FAILED``, or ``model.COMPUTED_UNKNOWN`` for frames read from sqlite.
    sqlite : str or None
        The tarball's sqlite file name in OUTPUT_DIR, when it exists.
    """

    sqlite: str | None = None

    def is_computed(self):
        """ndarray of shape (n_frames,), bool: frames with a palette."""
        return np.isin(self.backend, (model.CPU, model.GPU, model.COMPUTED_UNKNOWN))

    def is_failed(self):
        """ndarray of shape (n_frames,), bool: frames that could not be processed."""
        return self.backend == model.FAILED

    def is_pending(self):
        """ndarray of shape (n_frames,), bool: frames not computed yet (partial tarballs)."""
        return self.backend == model.PENDING

    def backends(self):
        """Computed frames per backend name (``unknown`` for frames read from sqlite)."""
        names = {**model.BACKEND_NAMES, model.COMPUTED_UNKNOWN: "unknown"}
        codes, counts = np.unique(self.backend[self.is_computed()], return_counts=True)
        return {names[int(code)]: int(count) for code, count in zip(codes, counts)}

    def name_order(self):
        """Frame positions sorted by member name (ties in tar order): the time order of packed videos.

        Returns
        -------
        ndarray of shape (n_frames,), int64
        """
        # packed videos are stored in name order already: checked in C, far cheaper than sorting
        if all(map(operator.le, self.frames, itertools.islice(self.frames, 1, None))):
            return np.arange(len(self.frames), dtype=np.int64)
        return np.array(sorted(range(len(self.frames)), key=self.frames.__getitem__), dtype=np.int64)


class OutputReader:
    """OUTPUT_DIR's results, open for reading one tarball at a time.

    Parameters
    ----------
    output_dir : str

    Attributes
    ----------
    output_dir : str
    source : str
        ``checkpoint`` or ``sqlite``: where the tarballs are read from.
    settings : dict
        The settings that made the results.
    names : list of str
        The tarballs, sorted by name.
    clusters : int
        Colours per frame (the most of any tarball; 0 without tarballs).
    run_summary : dict or None
        ``run-summary.json`` of the last run (wall seconds, frames, per-rank numbers), when present.
    damaged : dict of str to str
        Tarballs (or sqlite files) that could not be read, with the reason; filled as they are met.

    Raises
    ------
    FileNotFoundError
        When OUTPUT_DIR does not exist or holds neither a checkpoint nor a sqlite file.
    """

    def __init__(self, output_dir):
        if not os.path.isdir(output_dir):
            raise FileNotFoundError(f"OUTPUT_DIR {output_dir} does not exist or is not a folder")
        self.output_dir = output_dir
        self.damaged = {}
        self.run_summary = _run_summary(output_dir)
        self._sqlite_files = sqlite_files(output_dir)
        self._checkpoint = None
        try:
            self._checkpoint = CheckpointReader(output_dir)
        except FileNotFoundError:
            pass
        except OutputError as error:
            log.warning("%s; reading the sqlite files instead", error)
        if self._checkpoint is not None:
            self.source, self.settings = SOURCE_CHECKPOINT, self._checkpoint.settings
            # (name, where to read it): the checkpoint's group name, or a sqlite file's path
            self._entries = [(name, name) for name in self._checkpoint.names()]
            self.clusters = int(self.settings.get("clusters") or 0) if self._entries else 0
            return
        if not self._sqlite_files:
            raise FileNotFoundError(f"OUTPUT_DIR {output_dir} holds neither {CHECKPOINT} nor any "
                                    "hist_*.sqlite file: is it the OUTPUT_DIR of an `mpicolor run`?")
        self.source, self.settings, self.clusters = SOURCE_SQLITE, {}, 0
        paths = {}
        for file_name in sorted(self._sqlite_files):
            path = os.path.join(output_dir, file_name)
            try:
                info, clusters = read_sqlite_info(path)
            except READ_ERRORS as error:
                self._damage(file_name, error)
                continue
            name = info.get("tarball") or file_name
            if name in paths:
                log.warning("%s and %s both hold %s (results of two labels?): reading the first only",
                            os.path.basename(paths[name]), file_name, name)
                continue
            self.settings = self.settings or {key: value for key, value in info.items() if key in STORED_SETTINGS}
            paths[name] = path
            self.clusters = max(self.clusters, clusters)
        self._entries = sorted(paths.items())

    @property
    def names(self):
        """The tarballs, sorted by name."""
        return [name for name, _ in self._entries]

    def select(self, names):
        """The tarballs named, in name order; ValueError naming any that is not in OUTPUT_DIR."""
        known = set(self.names)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"tarball {', '.join(map(repr, unknown))} is not in {self.output_dir}; it holds "
                             f"{', '.join(sorted(known)) or 'no tarballs'}")
        return sorted(set(names))

    def frame_counts(self, names):
        """``{name: frames}`` of the tarballs named that can be read, without reading their results (the
        checkpoint's dataset shapes, or one query per sqlite file)."""
        counts = {}
        for name, where in self._entries:
            if name not in names or name in self.damaged:
                continue
            try:
                counts[name] = (self._checkpoint.frame_count(where) if self.source == SOURCE_CHECKPOINT
                                else sqlite_frame_count(where))
            except READ_ERRORS as error:
                self._damage(name, error)
        return counts

    def tarballs(self, names=None, names_as_bytes=False):
        """The tarballs' results one at a time, in name order; a tarball that cannot be read is logged with
        the reason, kept in ``damaged`` and left out.

        Parameters
        ----------
        names : list of str, optional
            Only these (from :meth:`select`); default: all.
        names_as_bytes : bool
            Frame names from the checkpoint as UTF-8 ``S`` arrays (`mpicolor.state.checkpoint.read_names_bytes`)
            instead of lists of str; names from sqlite files stay lists.

        Yields
        ------
        TarballView
        """
        wanted = None if names is None else set(names)
        for name, where in self._entries:
            if (wanted is not None and name not in wanted) or name in self.damaged:
                continue
            try:
                if self.source == SOURCE_CHECKPOINT:
                    yield self._from_checkpoint(self._checkpoint.read(where, names_as_bytes))
                else:
                    yield self._from_sqlite(where)
            except READ_ERRORS as error:
                self._damage(name, error)

    def _damage(self, name, error):
        reason = f"{type(error).__name__}: {error}"
        log.warning("%s in %s cannot be read (%s); going on without it", name, self.output_dir, reason)
        self.damaged[name] = reason

    def _from_checkpoint(self, tarball):
        sqlite_file = sqlite_name(tarball.name, self.settings["label"]) if self.settings.get("label") else None
        fields = {field.name: getattr(tarball, field.name) for field in dataclasses.fields(tarball)}
        return TarballView(**fields, sqlite=sqlite_file if sqlite_file in self._sqlite_files else None)

    def _from_sqlite(self, path):
        tarball = read_sqlite(path)
        fields = {field.name: getattr(tarball, field.name) for field in dataclasses.fields(tarball)}
        return TarballView(**fields, sqlite=os.path.basename(path))

    def close(self):
        if self._checkpoint is not None:
            self._checkpoint.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _run_summary(output_dir):
    path = os.path.join(output_dir, RUN_SUMMARY)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as stream:
            return json.load(stream)
    except (OSError, ValueError) as error:
        log.warning("%s is unreadable (%s); no throughput to show", path, error)
        return None


def add_arguments(parser, tarball_help="only these tarballs (default: all, in name order)"):
    """The flags ``inspect``, ``render`` and ``export`` share: OUTPUT_DIR, ``--tarball`` and ``--progress``."""
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the OUTPUT_DIR of `mpicolor run`")
    parser.add_argument("--tarball", nargs="+", default=None, metavar="NAME", help=tarball_help)
    parser.add_argument("--progress", default="auto", choices=("auto", "bar", "log"),
                        help="a live bar, or a log line every 10 s (default auto: the bar on a terminal)")


def each_tarball(reader, names, progress_mode, names_as_bytes=False):
    """``reader.tarballs(names, names_as_bytes)``, showing tarballs and frames done as they are read.

    Parameters
    ----------
    reader : OutputReader
    names : list of str
    progress_mode : str
        ``auto``, ``bar`` or ``log`` (:class:`mpicolor.job.progress.Progress`).
    names_as_bytes : bool

    Yields
    ------
    TarballView
    """
    progress = Progress(len(names), mode=progress_mode)
    done = frames = shown = 0
    try:
        for tarball in _read_ahead(reader.tarballs(names, names_as_bytes)):
            yield tarball
            done, frames = done + 1, frames + len(tarball.frames)
            # the total is an estimate until every tarball is read
            if progress.update(done, frames, frames * len(names) // done):
                shown = done
        # a tool that showed its progress ends it at the end
        if progress.shown and shown != done:
            progress.update(done, frames, frames, force=True)
    finally:
        progress.close()


def _read_ahead(iterator):
    """The items of ``iterator``, the next one read in a thread while this one is used.

    Reading a tarball and writing the previous one's output then overlap where the libraries release the GIL
    (HDF5 and sqlite reads, Parquet's encoder, NumPy).
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        coming = pool.submit(next, iterator, None)
        while (item := coming.result()) is not None:
            coming = pool.submit(next, iterator, None)
            yield item


def over_selection(output_dir, wanted, work):
    """Run a tool's ``work(reader, names)`` on the tarballs of OUTPUT_DIR it was asked for.

    Parameters
    ----------
    output_dir : str
    wanted : list of str or None
        ``--tarball``: these tarballs, or all of them in name order.
    work : callable
        ``work(reader, names)`` with an open :class:`OutputReader`; returns an exit status, or None when
        done.

    Returns
    -------
    int
        ``work``'s status; else 0, or ``EXIT_INPUT_FAILED`` when a tarball could not be read; ``EXIT_USAGE``
        for a ``--tarball`` that OUTPUT_DIR does not hold; ``EXIT_OUTPUT`` when it cannot be read
        (`mpicolor.job.exits`).
    """
    try:
        reader = OutputReader(output_dir)
    except FileNotFoundError as error:
        log.error("%s", error)
        return EXIT_OUTPUT
    with reader:
        try:
            names = reader.select(wanted) if wanted else reader.names
        except ValueError as error:
            log.error("%s", error)
            return EXIT_USAGE
        status = work(reader, names)
        return exit_status(reader) if status is None else status


def exit_status(reader):
    """A tool's exit status once it is done: 0, or ``EXIT_INPUT_FAILED`` when a tarball could not be read."""
    if reader.damaged:
        log.error("%d tarball(s) of %s could not be read and are left out: %s", len(reader.damaged),
                  reader.output_dir, ", ".join(sorted(reader.damaged)))
        return EXIT_INPUT_FAILED
    return EXIT_OK


@contextlib.contextmanager
def output_stream(out):
    """A binary stream for a tool's output: standard output, or the file ``out`` written under a temporary
    name and renamed when complete (a failed or interrupted tool leaves no half file).

    Yields
    ------
    file
    """
    if out is None:
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    final = os.path.abspath(out)
    temporary = temporary_path(final)
    try:
        with open(temporary, "wb") as stream:
            yield stream
        publish(temporary, final)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    log.info("wrote %s", out)
