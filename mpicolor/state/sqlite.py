"""The original's output: ``hist_{data set}_{label}.sqlite`` per finished tarball or video, written atomically."""

import errno
import json
import os
import sqlite3

import numpy as np

from mpicolor.state.atomic import publish_together, require_space, temporary_path
from mpicolor.state.checkpoint import CHECKPOINT_FOLDER, read_tarball_file, tarball_file_name
from mpicolor.state.results import CPU, CROP_SIDES, GPU


def sqlite_name(tarball_name, label):
    """The original's output name, ``hist_{tarball}_{label}.sqlite``."""
    return f"hist_{tarball_name}_{label}.sqlite"


def write_sqlite(output_dir, label, results, settings):
    """Write one tarball's results as ``hist_{tarball}_{label}.sqlite``, atomically (see
    :func:`write_sqlite_files`); returns the path written."""
    return write_sqlite_files(output_dir, label, [results], settings)[0]


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
