"""The original's output: ``hist_{data set}_{label}.sqlite`` per finished tarball or video, written atomically,
and read back (for the tools, when no checkpoint can be read)."""

import errno
import glob
import json
import os
import sqlite3

import numpy as np

from mpicolor.state.atomic import publish_together, require_space, temporary_path
from mpicolor.state.checkpoint import CHECKPOINT_FOLDER, read_tarball_file, tarball_file_name
from mpicolor.state.results import (
    COMPLETE,
    COMPUTED_UNKNOWN,
    CPU,
    CROP_SIDES,
    FAILED,
    GPU,
    INCOMPLETE,
    PENDING,
    TarballResults,
)


def sqlite_name(tarball_name, label):
    """The original's output name, ``hist_{tarball}_{label}.sqlite``."""
    return f"hist_{tarball_name}_{label}.sqlite"


def write_sqlite_files(output_dir, label, tarballs, settings):
    """Write tarballs' results as ``hist_{tarball}_{label}.sqlite`` files, each atomically, published together.

    Returns
    -------
    list of str
        The paths written.
    """
    pairs = [_sqlite_temporary(output_dir, label, results, settings) for results in tarballs]
    if pairs:
        publish_together(pairs)
    return [final for _, final in pairs]


def write_sqlite_from_checkpoint(output_dir, names, settings):
    """Write the sqlite files of complete tarballs from their checkpoint files, published together.

    Whoever has OUTPUT_DIR mounted can do this, a worker as well as rank 0: the checkpoint file is durable
    before the name is handed out, so a sqlite file still appears only once its tarball is complete in the
    checkpoint.

    Parameters
    ----------
    output_dir : str
    names : list of str
        The tarballs.
    settings : dict
        The run's :meth:`~mpicolor.job.config.RunConfig.stored_settings` (``label`` names the files).

    Raises
    ------
    DamagedCheckpoint, OSError
        When a checkpoint file cannot be read, or a sqlite file cannot be written.
    """
    folder = os.path.join(output_dir, CHECKPOINT_FOLDER)
    tarballs = [read_tarball_file(os.path.join(folder, tarball_file_name(name)), name, settings) for name in names]
    return write_sqlite_files(output_dir, settings["label"], tarballs, settings)


def _sqlite_temporary(output_dir, label, results, settings):
    """Write one tarball's sqlite file under its temporary name; return ``(temporary, final)``.

    Table ``images(imgname, color0..color{K-1}, share0..share{K-1}, member)`` holds one row per computed
    frame in tar order (``member`` is the frame's position, which tells duplicate names apart), and for a
    video a column ``seconds`` (the frame's time; ``member`` its position among the frames kept); table
    ``failures(imgname, reason, member)`` the frames that could not be processed; table
    ``notes(imgname, note, member)`` warnings of frames that succeeded; table ``info(key, value)`` the settings
    and counts. Parameterised SQL only: member names come from anywhere.
    """
    clusters = results.packed.shape[1]
    final = os.path.join(output_dir, sqlite_name(results.name, label))
    temporary = temporary_path(final)
    if os.path.exists(temporary):
        os.remove(temporary)
    colors = [f"color{i} integer" for i in range(clusters)]
    shares = [f"share{i} real" for i in range(clusters)]
    crops = [f"crop_{side} integer" for side in CROP_SIDES] if results.crops is not None else []
    seconds = ["seconds real"] if results.seconds is not None else []
    done = np.flatnonzero((results.backend == CPU) | (results.backend == GPU))
    names = [results.frames[position] for position in done.tolist()]
    # columns as lists, zipped into rows: far cheaper than building each row in Python
    crop_columns = results.crops[done].T.astype(np.int64).tolist() if crops else []
    seconds_columns = [results.seconds[done].tolist()] if seconds else []
    rows = list(zip(names, *results.packed[done].T.astype(np.int64).tolist(),
                    *results.shares[done].T.astype(np.float64).tolist(), done.tolist(), *crop_columns,
                    *seconds_columns))
    failures, notes = ([(results.frames[position], text, position) for position, text in sorted(texts.items())]
                       for texts in (results.failures, results.notes))
    info = dict(settings, tarball=results.name, frames=len(rows), failures=len(failures),
                skipped=json.dumps(results.skipped, sort_keys=True), incomplete=results.incomplete or "")
    require_space(output_dir, 2 * results.nbytes())
    connection = sqlite3.connect(temporary)
    try:
        # The file is new and private until publish() fsyncs and renames it, so sqlite's own journal and
        # fsyncs (three per transaction) buy nothing here and cost most of the write; readers of the
        # published file get sqlite's default rollback journal (never WAL: it needs shared memory that
        # network file systems lack).
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        with connection:
            connection.execute(f"CREATE TABLE images (imgname text, {', '.join(colors + shares)}, member integer"
                               + "".join(f", {column}" for column in crops + seconds) + ")")
            connection.execute("CREATE TABLE failures (imgname text, reason text, member integer)")
            connection.execute("CREATE TABLE notes (imgname text, note text, member integer)")
            connection.execute("CREATE TABLE info (key text PRIMARY KEY, value text)")
            marks = ", ".join("?" * (2 + 2 * clusters + len(crops) + len(seconds)))
            connection.executemany(f"INSERT INTO images VALUES ({marks})", rows)
            connection.executemany("INSERT INTO failures VALUES (?, ?, ?)", failures)
            connection.executemany("INSERT INTO notes VALUES (?, ?, ?)", notes)
            connection.executemany("INSERT INTO info VALUES (?, ?)",
                                   [(key, str(value)) for key, value in sorted(info.items())])
    except sqlite3.OperationalError as error:
        raise OSError(errno.EIO, f"cannot write {final}: {error}", final) from error
    finally:
        connection.close()
    return temporary, final


# ---- reading back ----

def sqlite_files(output_dir):
    """The names of the ``hist_*.sqlite`` files in OUTPUT_DIR."""
    return {os.path.basename(path) for path in glob.glob(os.path.join(glob.escape(output_dir), "hist_*.sqlite"))}


def _connect(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def read_sqlite_info(path):
    """A ``hist_*.sqlite`` file's ``info`` table as a dict, and its colours per frame."""
    connection = _connect(path)
    try:
        info = dict(connection.execute("SELECT key, value FROM info").fetchall())
        columns = [row[1] for row in connection.execute("PRAGMA table_info(images)")]
    finally:
        connection.close()
    return info, sum(column.startswith("color") for column in columns)


def sqlite_frame_count(path):
    """Frames of one ``hist_*.sqlite`` file: one past the largest ``member`` of its images and failures."""
    connection = _connect(path)
    try:
        largest = connection.execute("SELECT max(member) FROM (SELECT member FROM images UNION ALL "
                                     "SELECT member FROM failures)").fetchone()[0]
    finally:
        connection.close()
    return 0 if largest is None else largest + 1


def read_sqlite(path):
    """The :class:`~mpicolor.state.results.TarballResults` of one ``hist_*.sqlite`` file (what the tools read
    without a checkpoint); the ``member`` column places every row, and computed frames have the backend code
    ``COMPUTED_UNKNOWN``."""
    info, clusters = read_sqlite_info(path)
    connection = _connect(path)
    try:
        selected = ", ".join(["imgname", "member"] + [f"color{k}" for k in range(clusters)]
                             + [f"share{k}" for k in range(clusters)])
        images = connection.execute(f"SELECT {selected} FROM images").fetchall()
        failures = connection.execute("SELECT imgname, reason, member FROM failures").fetchall()
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # files written before notes were recorded have no notes table
        notes = connection.execute("SELECT note, member FROM notes").fetchall() if "notes" in tables else []
    finally:
        connection.close()
    # columns of rows, transposed in C: a Python loop per row is what made this slow at scale
    names, members, *values = zip(*images) if images else ((), (), *[()] * (2 * clusters))
    members = np.array(members, np.int64)
    failed_names, reasons, failed_members = zip(*failures) if failures else ((), (), ())
    failed_members = np.array(failed_members, np.int64)
    n_frames = 1 + int(max(members.max(initial=-1), failed_members.max(initial=-1)))
    frames = [""] * n_frames
    for positions, texts in ((members, names), (failed_members, failed_names)):
        for position, text in zip(positions.tolist(), texts):
            frames[position] = text
    packed = np.zeros((n_frames, clusters), np.uint32)
    shares = np.zeros((n_frames, clusters), np.float32)
    packed[members] = np.array(values[:clusters], np.int64).T.reshape(-1, clusters)
    shares[members] = np.array(values[clusters:], np.float64).T.reshape(-1, clusters)
    backend = np.full(n_frames, PENDING, np.uint8)
    backend[members] = COMPUTED_UNKNOWN
    backend[failed_members] = FAILED
    return TarballResults(
        name=info.get("tarball") or os.path.basename(path), frames=frames, packed=packed, shares=shares,
        backend=backend, failures=dict(zip(failed_members.tolist(), reasons)),
        notes={member: note for note, member in notes}, skipped=json.loads(info.get("skipped") or "{}"),
        incomplete=info.get("incomplete") or None,
        status=INCOMPLETE if info.get("incomplete") else COMPLETE)
