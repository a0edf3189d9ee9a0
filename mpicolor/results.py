"""Read what a run left in OUTPUT_DIR for ``inspect``, ``render`` and ``export``: checkpoint first, sqlite next.

The HDF5 checkpoint holds every tarball, finished or not, in one file and is read first. Without a
readable checkpoint (copied results, a deleted checkpoint) the ``hist_*.sqlite`` files are read instead;
they exist only for finished tarballs and do not record which backend computed a frame.
"""

import dataclasses
import glob
import json
import logging
import os
import sys
import sqlite3
from dataclasses import dataclass

import numpy as np

from mpicolor.state import results as model
from mpicolor.state.atomic import write_atomically
from mpicolor.state.checkpoint import CHECKPOINT, CheckpointReader, DamagedCheckpoint
from mpicolor.state.output_dir import RUN_SUMMARY, OutputError
from mpicolor.state.sqlite import sqlite_name

log = logging.getLogger(__name__)

SOURCE_CHECKPOINT, SOURCE_SQLITE = "checkpoint", "sqlite"
# exit status of inspect, render and export when OUTPUT_DIR holds no results (as `run`'s unusable OUTPUT_DIR)
EXIT_NO_RESULTS = 3
# the per-frame state of a frame read from sqlite: computed, by a backend the file does not record
COMPUTED_UNKNOWN = 255


@dataclass
class TarballView(model.TarballResults):
    """One tarball's results (the checkpoint's :class:`~mpicolor.state.results.TarballResults`), whichever file they
    were read from.

    Attributes
    ----------
    backend : ndarray of shape (n_frames,), uint8
        ``PENDING``, ``CPU``, ``GPU``, ``FAILED``, or ``COMPUTED_UNKNOWN`` for frames read from sqlite.
    sqlite : str or None
        The tarball's sqlite file name in OUTPUT_DIR, when it exists.
    """

    sqlite: str | None = None

    def is_computed(self):
        """ndarray of shape (n_frames,), bool: frames with a palette."""
        return np.isin(self.backend, (model.CPU, model.GPU, COMPUTED_UNKNOWN))

    def is_failed(self):
        """ndarray of shape (n_frames,), bool: frames that could not be processed."""
        return self.backend == model.FAILED

    def is_pending(self):
        """ndarray of shape (n_frames,), bool: frames not computed yet (partial tarballs)."""
        return self.backend == model.PENDING

    def backends(self):
        """Computed frames per backend name (``unknown`` for frames read from sqlite)."""
        names = {**model.BACKEND_NAMES, COMPUTED_UNKNOWN: "unknown"}
        codes, counts = np.unique(self.backend[self.is_computed()], return_counts=True)
        return {names[int(code)]: int(count) for code, count in zip(codes, counts)}

    def name_order(self):
        """Frame positions sorted by member name (ties in tar order): the time order of packed videos.

        Returns
        -------
        ndarray of shape (n_frames,), int64
        """
        return np.array(sorted(range(len(self.frames)), key=lambda position: self.frames[position]),
                        dtype=np.int64)


@dataclass
class OutputView:
    """Everything read from one OUTPUT_DIR.

    Attributes
    ----------
    output_dir : str
    source : str
        ``checkpoint`` or ``sqlite``: where the tarballs were read from.
    settings : dict
        The settings that made the results (empty when nothing was found).
    tarballs : list of TarballView
        Sorted by tarball name.
    run_summary : dict or None
        ``run-summary.json`` of the last run (wall seconds, frames, per-rank numbers), when present.
    """

    output_dir: str
    source: str
    settings: dict
    tarballs: list
    run_summary: dict | None

    def select(self, names):
        """The tarballs named, in name order; ValueError naming any that is not in OUTPUT_DIR."""
        known = {tarball.name: tarball for tarball in self.tarballs}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"tarball {', '.join(map(repr, unknown))} is not in {self.output_dir}; it holds "
                             f"{', '.join(sorted(known)) or 'no tarballs'}")
        return [known[name] for name in sorted(set(names))]


def load(output_dir):
    """Read OUTPUT_DIR's results.

    Returns
    -------
    OutputView

    Raises
    ------
    FileNotFoundError
        When OUTPUT_DIR does not exist or holds neither a checkpoint nor a sqlite file.
    """
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"OUTPUT_DIR {output_dir} does not exist or is not a folder")
    sqlite_files = _sqlite_files(output_dir)
    settings, stored = None, {}
    try:
        with CheckpointReader(output_dir) as reader:
            settings = reader.settings
            for name in reader.names():
                try:
                    stored[name] = reader.read(name)
                except DamagedCheckpoint as error:
                    log.warning("%s; tarball %s is left out", error, name)
    except FileNotFoundError:
        pass
    except OutputError as error:
        log.warning("%s; reading the sqlite files instead", error)
    summary = _run_summary(output_dir)
    if settings is not None:
        label = settings.get("label")
        tarballs = [_from_checkpoint(results, sqlite_name(name, label) if label else None, sqlite_files)
                    for name, results in sorted(stored.items())]
        return OutputView(output_dir, SOURCE_CHECKPOINT, settings, tarballs, summary)
    if not sqlite_files:
        raise FileNotFoundError(f"OUTPUT_DIR {output_dir} holds neither {CHECKPOINT} nor any "
                                "hist_*.sqlite file: is it the OUTPUT_DIR of an `mpicolor run`?")
    settings = {}
    tarballs = []
    for file_name in sorted(sqlite_files):
        info, tarball = _from_sqlite(os.path.join(output_dir, file_name))
        settings = settings or {key: value for key, value in info.items() if key in _SETTINGS_KEYS}
        tarballs.append(tarball)
    tarballs.sort(key=lambda tarball: tarball.name)
    return OutputView(output_dir, SOURCE_SQLITE, settings, tarballs, summary)


# keys of a sqlite file's ``info`` table that are the run's settings, not the tarball's counts
_SETTINGS_KEYS = ("clusters", "method", "seed", "scale", "max_pixels", "label", "version")


def _sqlite_files(output_dir):
    return {os.path.basename(path) for path in glob.glob(os.path.join(glob.escape(output_dir), "hist_*.sqlite"))}


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


def _from_checkpoint(results, sqlite_file, sqlite_files):
    fields = {field.name: getattr(results, field.name) for field in dataclasses.fields(results)}
    return TarballView(**fields, sqlite=sqlite_file if sqlite_file in sqlite_files else None)


def _from_sqlite(path):
    """``(info, TarballView)`` of one ``hist_*.sqlite`` file; the ``member`` column places every row."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        info = dict(connection.execute("SELECT key, value FROM info").fetchall())
        columns = [row[1] for row in connection.execute("PRAGMA table_info(images)")]
        clusters = sum(column.startswith("color") for column in columns)
        selected = ", ".join(["imgname", "member"] + [f"color{k}" for k in range(clusters)]
                             + [f"share{k}" for k in range(clusters)])
        images = connection.execute(f"SELECT {selected} FROM images").fetchall()
        failures = connection.execute("SELECT imgname, reason, member FROM failures").fetchall()
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # files written before notes were recorded have no notes table
        notes = connection.execute("SELECT note, member FROM notes").fetchall() if "notes" in tables else []
    finally:
        connection.close()
    n_frames = 1 + max([row[1] for row in images] + [row[2] for row in failures], default=-1)
    frames = [""] * n_frames
    packed = np.zeros((n_frames, clusters), np.uint32)
    shares = np.zeros((n_frames, clusters), np.float32)
    backend = np.full(n_frames, model.PENDING, np.uint8)
    for imgname, member, *values in images:
        frames[member] = imgname
        packed[member] = values[:clusters]
        shares[member] = values[clusters:]
        backend[member] = COMPUTED_UNKNOWN
    for imgname, reason, member in failures:
        frames[member] = imgname
        backend[member] = model.FAILED
    tarball = TarballView(
        name=info.get("tarball") or os.path.basename(path), frames=frames, packed=packed, shares=shares,
        backend=backend, failures={member: reason for _, reason, member in failures},
        notes={member: note for note, member in notes}, skipped=json.loads(info.get("skipped") or "{}"),
        incomplete=info.get("incomplete") or None,
        status=model.INCOMPLETE if info.get("incomplete") else model.COMPLETE, sqlite=os.path.basename(path))
    return info, tarball


def load_for_command(output_dir):
    """The view of OUTPUT_DIR for ``inspect`` and ``export``, or None after logging why it cannot be read."""
    try:
        return load(output_dir)
    except FileNotFoundError as error:
        log.error("%s", error)
        return None


def emit(text, out):
    """Write a command's text to stdout, or atomically to the file ``out``."""
    if out is None:
        sys.stdout.write(text)
    else:
        write_atomically(out, text.encode())
        log.info("wrote %s", out)
