"""Rank 0's outputs: one sqlite file per tarball and the HDF5 checkpoint, both written atomically.

Every file appears under its final name only when it is complete: it is written under a temporary name
in the same folder, flushed and fsynced, renamed over the final name, and the folder is fsynced. A
killed job therefore leaves either the previous or the next version of a file, never half of one; a
rerun takes temporary files it finds for what they are and removes them.

The checkpoint keeps its previous generation (``checkpoint.prev.h5``) to fall back to. A new generation
starts as a kernel-side copy of the live file, so the rows of finished tarballs are not rewritten by
Python at every checkpoint; only tarballs that changed are written into the copy.
"""

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import h5py
import numpy as np

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.h5"
CHECKPOINT_PREV = "checkpoint.prev.h5"
RUN_SUMMARY = "run-summary.json"
LOCK = ".mpicolor.lock"
TEMP_SUFFIX = ".partial"
FORMAT = "mpicolor-checkpoint-1"

# backend codes per frame: what computed it, or that it has not been computed or failed
PENDING, CPU, GPU, FAILED = 0, 1, 2, 3
BACKEND_NAMES = {CPU: "cpu", GPU: "gpu", FAILED: "failed"}
BACKEND_CODES = {name: code for code, name in BACKEND_NAMES.items()}

PARTIAL, COMPLETE, INCOMPLETE, UNREADABLE = "partial", "complete", "incomplete", "unreadable"
CROP_SIDES = ("top", "bottom", "left", "right")


class OutputError(RuntimeError):
    """OUTPUT_DIR cannot be used: locked by another run, unwritable, or holds results of other settings."""


@dataclass
class TarballResults:
    """The results of one tarball, as rank 0 gathers them.

    Attributes
    ----------
    name : str
        The tarball's file name.
    frames : list of str, length n_frames
        Member names in tar order; duplicates are told apart by their position (``member`` in the outputs).
    packed : ndarray of shape (n_frames, clusters), uint32
        Colours ``R << 16 | G << 8 | B``, largest share first.
    shares : ndarray of shape (n_frames, clusters), float32
        The colours' shares of the frame's pixels.
    backend : ndarray of shape (n_frames,), uint8
        ``PENDING``, ``CPU``, ``GPU`` or ``FAILED`` per frame.
    failures : dict of int to str
        Why frames (by position) could not be processed.
    notes : dict of int to str
        Warnings raised while computing frames that did succeed (e.g. fewer distinct colours than clusters),
        kept with the frame instead of flooding the log.
    skipped : dict of str to int
        Members that are not frames, counted by kind.
    incomplete : str or None
        Why the tarball could be read only in part (a truncated tar), else None.
    status : str
        ``partial`` (frames still to compute), ``complete``, ``incomplete`` (all readable frames done but the
        tarball is cut short: not taken as done) or ``unreadable``.
    error : str or None
        Why an unreadable tarball could not be read.
    crops : ndarray of shape (n_frames, 4), uint16, or None
        With ``--crop-borders auto``: the bars left out of each frame's palette, (top, bottom, left, right)
        in pixels of the decoded frame.
    """

    name: str
    frames: list
    packed: np.ndarray
    shares: np.ndarray
    backend: np.ndarray
    failures: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    incomplete: str | None = None
    status: str = PARTIAL
    error: str | None = None
    crops: np.ndarray | None = None

    @classmethod
    def empty(cls, name, frames, clusters, skipped=None, incomplete=None, crops=False):
        """Results with no frame computed yet (``crops``: keep each frame's crop too)."""
        n_frames = len(frames)
        return cls(name, list(frames), np.zeros((n_frames, clusters), np.uint32),
                   np.zeros((n_frames, clusters), np.float32), np.zeros(n_frames, np.uint8),
                   skipped=dict(skipped or {}), incomplete=incomplete,
                   crops=np.zeros((n_frames, 4), np.uint16) if crops else None)

    @classmethod
    def unreadable(cls, name, error, clusters):
        """A tarball that could not be read at all."""
        results = cls.empty(name, [], clusters)
        results.status, results.error = UNREADABLE, error
        return results

    def pending(self):
        """Positions of the frames still to compute, ascending, as an int64 array."""
        return np.flatnonzero(self.backend == PENDING)

    def record(self, positions, packed, shares, backend, failures, notes=None, crops=None):
        """Store a batch of computed frames.

        Parameters
        ----------
        positions : ndarray of shape (n,), int
            Frame positions in this tarball.
        packed : ndarray of shape (n, clusters), uint32
        shares : ndarray of shape (n, clusters), float32
        backend : ndarray of shape (n,), uint8
            Backend code per frame (``FAILED`` for frames that could not be processed).
        failures : dict of int to str
            Reasons of the failed frames, by position.
        notes : dict of int to str, optional
            Warnings of frames that succeeded, by position.
        crops : ndarray of shape (n, 4), uint16, optional
            The frames' crops, when the run crops borders.
        """
        self.packed[positions] = packed
        self.shares[positions] = shares
        self.backend[positions] = backend
        self.failures.update(failures)
        self.notes.update(notes or {})
        if crops is not None:
            self.crops[positions] = crops

    def settle(self):
        """Set ``status`` from what is computed; return True when no frame is pending."""
        if self.status == UNREADABLE:
            return True
        finished = not np.any(self.backend == PENDING)
        if finished:
            self.status = INCOMPLETE if self.incomplete else COMPLETE
        else:
            self.status = PARTIAL
        return finished


def sqlite_name(tarball_name, label):
    """The original's output name, ``hist_{tarball}_{label}.sqlite``."""
    return f"hist_{tarball_name}_{label}.sqlite"


def _fsync(path):
    """fsync a file or a folder (a rename is durable only once its folder is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temporary, final):
    """Make a complete temporary file durable and give it its final name atomically."""
    publish_together([(temporary, final)])


def publish_together(pairs):
    """:func:`publish` several ``(temporary, final)`` files of one folder with one wait for the disk.

    The fsyncs run in threads (they release the GIL), so that the file system can commit them together
    instead of one journal commit per file; then the renames, then one fsync of the folder.
    """
    if len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(pairs))) as pool:
            list(pool.map(_fsync, [temporary for temporary, _ in pairs]))
    else:
        _fsync(pairs[0][0])
    for temporary, final in pairs:
        os.replace(temporary, final)
    _fsync(os.path.dirname(pairs[0][1]))


def temporary_path(final):
    """The hidden temporary name beside ``final`` that a rerun knows to be stale."""
    return os.path.join(os.path.dirname(final), "." + os.path.basename(final) + TEMP_SUFFIX)


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


def _sqlite_temporary(output_dir, label, results, settings):
    """Write one tarball's sqlite file under its temporary name; return ``(temporary, final)``.

    Table ``images(imgname, color0..color{K-1}, share0..share{K-1}, member)`` holds one row per computed
    frame in tar order (``member`` is the frame's position, which tells duplicate names apart); table
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
    done = np.flatnonzero((results.backend == CPU) | (results.backend == GPU))
    names = [results.frames[position] for position in done.tolist()]
    # columns as lists, zipped into rows: far cheaper than building each row in Python
    crop_columns = results.crops[done].T.astype(np.int64).tolist() if crops else []
    rows = list(zip(names, *results.packed[done].T.astype(np.int64).tolist(),
                    *results.shares[done].T.astype(np.float64).tolist(), done.tolist(), *crop_columns))
    failures, notes = ([(results.frames[position], text, position) for position, text in sorted(texts.items())]
                       for texts in (results.failures, results.notes))
    info = dict(settings, tarball=results.name, frames=len(rows), failures=len(failures),
                skipped=json.dumps(results.skipped, sort_keys=True), incomplete=results.incomplete or "")
    _require_space(output_dir, 2 * _nbytes([results]))
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
                               + "".join(f", {column}" for column in crops) + ")")
            connection.execute("CREATE TABLE failures (imgname text, reason text, member integer)")
            connection.execute("CREATE TABLE notes (imgname text, note text, member integer)")
            connection.execute("CREATE TABLE info (key text PRIMARY KEY, value text)")
            marks = ", ".join("?" * (2 + 2 * clusters + len(crops)))
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


def write_atomically(path, data):
    """Write ``data`` (bytes) under a temporary name beside ``path``, fsync, rename: never a half file."""
    temporary = temporary_path(os.path.abspath(path))
    with open(temporary, "wb") as stream:
        stream.write(data)
    publish(temporary, os.path.abspath(path))


def write_json(path, document):
    """Write a JSON document atomically."""
    write_atomically(path, json.dumps(document, indent=1, sort_keys=True).encode())


class OutputLock:
    """An exclusive lock on OUTPUT_DIR held by rank 0 for the whole run.

    ``flock`` is released by the kernel when the process dies, so a lock file left by a killed job never
    blocks the rerun; the file's text only says who holds it.
    """

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, LOCK)
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputError(f"{os.path.dirname(self.path)} is in use by another mpicolor run ({holder}); "
                              "wait for it to end or choose another OUTPUT_DIR") from None
        except OSError as error:
            # e.g. Lustre mounted without -o flock: run on, but nothing stops a second run
            log.warning("cannot lock %s (%s): make sure no other run uses this OUTPUT_DIR", self.path,
                        error.strerror)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode(), 0)
        self.fd = fd

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def prepare_output_dir(output_dir):
    """Create OUTPUT_DIR if needed and check that this user can write into it."""
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise OutputError(f"OUTPUT_DIR {output_dir} cannot be created: {error.strerror}") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise OutputError(f"OUTPUT_DIR {output_dir} is not writable by this user")


def remove_stale_temporaries(output_dir):
    """Remove temporary files a killed run left; call with the :class:`OutputLock` held, so all are stale."""
    for entry in os.listdir(output_dir):
        if entry.startswith(".") and entry.endswith(TEMP_SUFFIX):
            log.info("removing %s left by an interrupted run", entry)
            os.remove(os.path.join(output_dir, entry))


class Checkpoint:
    """The HDF5 checkpoint in OUTPUT_DIR, written only by rank 0.

    Layout: root attributes hold the settings that made the results; group ``tarballs/{name}`` holds
    datasets ``frames`` (n,) str, ``packed`` (n, K) uint32, ``shares`` (n, K) float32, ``backend`` (n,)
    uint8, ``failed_members`` (m,) int64 and ``failure_reasons`` (m,) str, ``noted_members`` and ``notes``
    (warnings of frames that succeeded), and attributes ``status``,
    ``skipped`` (JSON), ``incomplete`` and ``error``. File locking is off: only rank 0 touches the file, and
    HDF5's locks fail on NFS and Lustre.
    """

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.live = os.path.join(output_dir, CHECKPOINT)
        self.previous = os.path.join(output_dir, CHECKPOINT_PREV)

    def load(self):
        """Read every tarball of the newest readable generation (see :class:`CheckpointReader`).

        Returns
        -------
        settings : dict or None
            The settings stored with the results; None when there is no checkpoint.
        tarballs : dict of str to TarballResults
        """
        if not any(os.path.exists(path) for path in (self.live, self.previous)):
            return None, {}
        with CheckpointReader(self.output_dir) as reader:
            return reader.settings, {name: reader.read(name) for name in reader.names()}

    def save(self, settings, changed):
        """Write a new generation with the ``changed`` tarballs' results, keeping the others'.

        Parameters
        ----------
        settings : dict
            Settings to store as root attributes.
        changed : iterable of TarballResults
            Tarballs whose results changed since the previous generation.
        """
        changed = list(changed)
        temporary = temporary_path(self.live)
        # a job killed between the two renames below leaves only the previous generation: build on it
        newest = next((path for path in (self.live, self.previous) if os.path.exists(path)), None)
        _require_space(self.output_dir, (os.path.getsize(newest) if newest else 0) + _nbytes(changed))
        if newest is not None:
            shutil.copyfile(newest, temporary)
            mode = "r+"
        else:
            mode = "w"  # a new temporary file, never the live checkpoint
        # libver="latest": new-style groups, much faster to extend than the 1.6-compatible default
        with h5py.File(temporary, mode, locking=False, libver="latest") as h5:
            if mode == "w":
                h5.attrs["format"] = FORMAT
                for key, value in settings.items():
                    h5.attrs[key] = "" if value is None else value
            group = h5.require_group("tarballs")
            for results in changed:
                _write_tarball(group, results)
        _fsync(temporary)
        if os.path.exists(self.live):
            os.replace(self.live, self.previous)
        # between the two renames only the previous generation exists, and load() falls back to it
        os.replace(temporary, self.live)
        _fsync(self.output_dir)


def _nbytes(changed):
    """Bytes the ``changed`` tarballs take in a checkpoint, generously (names and texts included)."""
    return sum(results.packed.nbytes + results.shares.nbytes + results.backend.nbytes
               + sum(len(name) + 16 for name in results.frames)
               + sum(len(text) + 24 for text in (*results.failures.values(), *results.notes.values()))
               for results in changed)


def _require_space(folder, needed):
    """Raise ENOSPC before writing ``needed`` bytes into ``folder`` if they would not fit.

    HDF5 does not fail cleanly on a full disk (seen here: a crash inside the library), so the checkpoint
    checks first, with room to spare for HDF5's own metadata.
    """
    free = shutil.disk_usage(folder).free
    wanted = 2 * needed + (1 << 20)
    if free < wanted:
        raise OSError(errno.ENOSPC, f"No space left on device (a checkpoint needs about {wanted >> 10} KiB, "
                                    f"{free >> 10} KiB are free)", folder)


def _write_tarball(parent, results):
    if results.name in parent:
        group = parent[results.name]
        if group["packed"].shape == results.packed.shape:
            group["packed"][...] = results.packed
            group["shares"][...] = results.shares
            group["backend"][...] = results.backend
            if results.crops is not None:
                group["crops"][...] = results.crops
        else:
            del parent[results.name]
    if results.name not in parent:
        group = parent.create_group(results.name)
        group.create_dataset("frames", data=[name.encode() for name in results.frames],
                             dtype=h5py.string_dtype("utf-8"))
        group.create_dataset("packed", data=results.packed)
        group.create_dataset("shares", data=results.shares)
        group.create_dataset("backend", data=results.backend)
        if results.crops is not None:
            group.create_dataset("crops", data=results.crops)
    _write_texts(group, "failed_members", "failure_reasons", results.failures)
    _write_texts(group, "noted_members", "notes", results.notes)
    group.attrs["status"] = results.status
    group.attrs["skipped"] = json.dumps(results.skipped, sort_keys=True)
    group.attrs["incomplete"] = results.incomplete or ""
    group.attrs["error"] = results.error or ""


def _write_texts(group, positions_name, texts_name, texts):
    """Store a position -> text mapping as two datasets, replacing the previous ones when it grew."""
    stored = len(group[positions_name]) if positions_name in group else 0
    if stored == len(texts):
        return  # entries are only ever added, never changed; none: no datasets (most tarballs)
    for name in (positions_name, texts_name):
        if name in group:
            del group[name]
    positions = sorted(texts)
    group.create_dataset(positions_name, data=np.array(positions, np.int64))
    group.create_dataset(texts_name, data=np.array([texts[p] for p in positions], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))


def _read_texts(group, positions_name, texts_name):
    if positions_name not in group:
        return {}
    return dict(zip(group[positions_name][...].tolist(), group[texts_name].asstr()[...].tolist()))


class CheckpointReader:
    """The newest readable generation of OUTPUT_DIR's checkpoint, open for reading one tarball at a time.

    Reading tarball by tarball keeps memory to one tarball's results, whatever the collection holds.

    Parameters
    ----------
    output_dir : str

    Attributes
    ----------
    settings : dict
        The settings stored with the results.

    Raises
    ------
    FileNotFoundError
        When OUTPUT_DIR holds no checkpoint.
    OutputError
        When no generation of the checkpoint is readable.
    """

    def __init__(self, output_dir):
        checkpoint = Checkpoint(output_dir)
        self.h5 = None
        for path in (checkpoint.live, checkpoint.previous):
            if not os.path.exists(path):
                continue
            try:
                self.h5 = h5py.File(path, "r", locking=False)
                if self.h5.attrs.get("format") != FORMAT:
                    raise ValueError(f"format {self.h5.attrs.get('format')!r} is not {FORMAT!r}")
                self.settings = {key: _plain(value) for key, value in self.h5.attrs.items() if key != "format"}
                self.tarballs = self.h5["tarballs"]
                break
            except (OSError, KeyError, ValueError) as error:
                self.close()
                log.warning("checkpoint %s is unreadable (%s); trying the previous generation", path, error)
        if self.h5 is None:
            if os.path.exists(checkpoint.live) or os.path.exists(checkpoint.previous):
                raise OutputError(f"no generation of the checkpoint in {output_dir} is readable; move "
                                  f"{CHECKPOINT} and {CHECKPOINT_PREV} away to start over")
            raise FileNotFoundError(errno.ENOENT, f"no {CHECKPOINT} in {output_dir}", output_dir)

    def names(self):
        """The tarballs in the checkpoint, sorted by name."""
        return sorted(self.tarballs)

    def read(self, name):
        """One tarball's :class:`TarballResults`."""
        group = self.tarballs[name]
        return TarballResults(
            name, group["frames"].asstr()[...].tolist(), group["packed"][...], group["shares"][...],
            group["backend"][...], _read_texts(group, "failed_members", "failure_reasons"),
            _read_texts(group, "noted_members", "notes"), json.loads(group.attrs["skipped"]),
            group.attrs["incomplete"] or None, group.attrs["status"], group.attrs["error"] or None,
            group["crops"][...] if "crops" in group else None)

    def close(self):
        if self.h5 is not None:
            self.h5.close()
            self.h5 = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _plain(value):
    """HDF5 attribute values as plain Python values ('' stands for None)."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if value == "" else value
