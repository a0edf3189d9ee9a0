"""The HDF5 checkpoint: one file per tarball, joined by ``checkpoint.h5``; written by rank 0 only.

Layout
------
``checkpoint.h5``
    The entry point. Root attributes hold the settings that made the results, ``format`` and ``input_dir``;
    group ``tarballs`` holds an HDF5 external link per tarball, ``tarballs/{name}`` to the root group of
    ``checkpoint/{name}.h5``, so that ``h5py.File("checkpoint.h5")["tarballs/x.tar/packed"]`` reads any
    tarball through this one file.
``checkpoint/{name}.h5``
    One tarball's results: datasets ``frames`` (n,) str (fixed-length UTF-8; variable-length when a few very
    long names would make that too large, and in every file of format 2), ``packed`` (n, K) uint32, ``shares`` (n, K)
    float32, ``backend`` (n,) uint8 (0 pending, 1 cpu, 2 gpu, 3 failed), ``crops`` (n, 4) uint16 with
    ``--crop-borders auto``, ``seconds`` (n,) float64 for a video (each frame's time), and when there are any
    ``failed_members`` (m,) int64 with ``failure_reasons``
    (m,) str, ``noted_members`` with ``notes``; attributes ``status``, ``skipped`` (JSON), ``incomplete``,
    ``error``, ``name``, ``format``, ``settings`` (JSON) and the tarball's fingerprint
    (``fingerprint_size``, ``fingerprint_mtime_ns``, ``fingerprint_members``). A name too long for a file
    name gets ``{sha256 of the name}.long.h5``.

Why a file per tarball: a save then writes what changed since the last save (the tarballs that ended, and
at the checkpoint interval those in progress), never what the collection holds; a finished tarball's file is
written once.

Crash safety: every file is written atomically (:mod:`mpicolor.state.atomic`), so it is complete or absent.
The tarball files are the truth: the index is brought up to date at every checkpoint interval and at the end
of a run (not at every tarball's end: its list grows with the collection), and rebuilt from the folder when it
is missing, stale or unreadable. A tarball file that cannot be read costs that tarball
only: the run computes it again and says so. File locking is off: only rank 0 touches these files, and
HDF5's locks fail on NFS and Lustre.

A checkpoint of mpicolor 0.1.0 (every tarball in ``checkpoint.h5`` itself, with ``checkpoint.prev.h5``
as its previous generation) is converted to this layout when a run resumes from it, and read in place by
the tools.
"""

import hashlib
import json
import logging
import os

import h5py
import numpy as np

from mpicolor.state.atomic import (
    TEMP_SUFFIX,
    publish,
    publish_together,
    remove_stale_temporaries,
    require_space,
    temporary_path,
)
from mpicolor.state.output_dir import OutputError
from mpicolor.state.results import TarballResults
from mpicolor.state.resume import MADE_BY
from mpicolor.state.tarballs import Fingerprint

log = logging.getLogger(__name__)

FORMAT = "mpicolor-checkpoint-3"
# the formats read as they are: 3, and 2, whose frame names are all variable-length strings
FORMATS = (FORMAT, "mpicolor-checkpoint-2")
# mpicolor 0.1.0: every tarball in one file, with a previous generation beside it
FORMAT_0_1 = "mpicolor-checkpoint-1"
CHECKPOINT = "checkpoint.h5"
CHECKPOINT_FOLDER = "checkpoint"
CHECKPOINT_PREV_0_1 = "checkpoint.prev.h5"
SUFFIX = ".h5"
LONG_SUFFIX = ".long.h5"
NAME_MAX = 255  # bytes in a file name on every file system a cluster mounts
FINGERPRINT_ATTRS = ("fingerprint_size", "fingerprint_mtime_ns", "fingerprint_members")
# The HDF5 file format written: HDF5 1.10's, which every HDF5 from 1.10 on reads (Debian 12 and RHEL 8
# ship 1.10). "latest" under HDF5 2.0 (h5py 3.16's wheels) writes objects that HDF5 1.x cannot read, and
# a checkpoint is often written on one machine and read on another.
FILE_FORMAT = ("v110", "v110")
# Bytes a frame name is read in at first by `read_names_bytes` (longer names are read again, wider).
NAME_BYTES = 64
# The most a tarball's names may take as one fixed-width array when they are written (`_names_array`).
NAMES_ARRAY_BYTES = 64 << 20


class DamagedCheckpoint(ValueError):
    """A checkpoint file that cannot be read, or holds results of other settings.

    Parameters
    ----------
    path : str
    reason : str
    """

    def __init__(self, path, reason):
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self):
        return f"{self.path}: {self.reason}"


def tarball_file_name(name):
    """The file of tarball ``name`` in the checkpoint folder: ``{name}.h5``, or a digest when that is too long."""
    encoded = name.encode("utf-8", "surrogateescape")
    if 1 + len(encoded) + len(SUFFIX) + len(TEMP_SUFFIX) <= NAME_MAX:
        return name + SUFFIX
    return hashlib.sha256(encoded).hexdigest() + LONG_SUFFIX


class Checkpoint:
    """OUTPUT_DIR's checkpoint as rank 0 keeps it during a run.

    Call :meth:`open` once, then :meth:`read` a tarball's stored results when it comes up, and :meth:`save`
    what changed. Nothing but the settings and the names of the stored tarballs is held in memory.

    Parameters
    ----------
    output_dir : str

    Attributes
    ----------
    settings : dict or None
        The settings stored with the results; None before :meth:`open` or without a checkpoint.
    input_dir : str or None
        The INPUT_DIR of the run that wrote the index.
    files : dict of str to str
        Tarball name -> its file in the checkpoint folder, for every stored tarball.
    """

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, CHECKPOINT)
        self.folder = os.path.join(output_dir, CHECKPOINT_FOLDER)
        self.settings = None
        self.input_dir = None
        self.files = {}
        self.linked = set()    # the tarballs the index on disk links to

    def open(self):
        """Find what the checkpoint holds; convert a 0.1.0 checkpoint and repair a stale or damaged index.

        Returns
        -------
        dict or None
            The stored settings, None when there is no checkpoint.
        """
        if os.path.isdir(self.folder):
            remove_stale_temporaries(self.folder)
        old = self._discover()
        if old is not None:
            self._convert(old)
        elif self.settings is not None and self.linked != set(self.files):
            log.info("%s links %d tarballs and %s/ holds %d: rewriting it", CHECKPOINT, len(self.linked),
                     CHECKPOINT_FOLDER, len(self.files))
            self._write_index(self.settings, self.input_dir)
        return self.settings

    def _discover(self):
        """Read the index (or, without one, the tarball files) into ``settings``, ``input_dir``, ``files`` and
        ``linked``; writes nothing.

        Returns
        -------
        str or None
            The path of a 0.1.0 checkpoint to read the tarballs from, else None.
        """
        self.files = self._scan_folder()
        try:
            index = _read_index(self.path) if os.path.exists(self.path) else None
        except (OSError, KeyError, ValueError) as error:
            log.warning("%s is unreadable (%s)", self.path, error)
            index = None
        if index is None:
            previous = os.path.join(self.output_dir, CHECKPOINT_PREV_0_1)
            if not self.files and os.path.exists(previous):
                # 0.1.0 killed between its two renames, or its live generation damaged: its previous one
                try:
                    index = _read_index(previous)
                except (OSError, KeyError, ValueError) as error:
                    log.warning("%s is unreadable (%s)", previous, error)
            if index is None:
                self.settings = self._settings_from_files()
                return None
        self.settings, self.input_dir, self.linked = index["settings"], index["input_dir"], index["linked"]
        return index["path"] if index["format"] == FORMAT_0_1 else None

    def _scan_folder(self):
        files = {}
        if not os.path.isdir(self.folder):
            return files
        for entry in sorted(os.listdir(self.folder)):
            if entry.startswith(".") or not entry.endswith(SUFFIX):
                continue
            if entry.endswith(LONG_SUFFIX):
                try:
                    with h5py.File(os.path.join(self.folder, entry), "r", locking=False) as h5:
                        files[str(h5.attrs["name"])] = entry
                except (OSError, KeyError) as error:
                    log.warning("%s is unreadable (%s); its tarball will be computed again",
                                os.path.join(self.folder, entry), error)
            else:
                files[entry[:-len(SUFFIX)]] = entry
        return files

    def _settings_from_files(self):
        """The settings stored in the first readable tarball file, for an index that is missing or damaged."""
        for file_name in self.files.values():
            path = os.path.join(self.folder, file_name)
            try:
                with h5py.File(path, "r", locking=False) as h5:
                    settings = json.loads(h5.attrs["settings"])
            except (OSError, KeyError, ValueError):
                continue
            log.warning("%s is missing or unreadable: the settings and tarballs come from the %d files in %s/",
                        CHECKPOINT, len(self.files), CHECKPOINT_FOLDER)
            return settings
        return None

    def read(self, name, names_as_bytes=False):
        """The stored results of tarball ``name`` (one of ``files``); `read_tarball_file` says the rest."""
        return read_tarball_file(os.path.join(self.folder, self.files[name]), name, self.settings or {},
                                 names_as_bytes)

    def save(self, settings, changed, input_dir=None, index=True):
        """Write the ``changed`` tarballs' files, then the index if the set of tarballs or the settings changed.

        Parameters
        ----------
        settings : dict
            The run's settings, stored in the index and in every tarball file.
        changed : iterable of TarballResults
            Tarballs whose results changed since they were last saved.
        input_dir : str, optional
            The run's INPUT_DIR, recorded in the index (default: keep the one recorded).
        index : bool, default True
            Bring the index up to date; False leaves that to a later save (unless there is no index yet), so
            that frequent saves do not rewrite a list that grows with the collection. The tarball files are
            the truth: :meth:`open` repairs a stale index.
        """
        changed = list(changed)
        input_dir = input_dir or self.input_dir
        require_space(self.output_dir, sum(results.nbytes() for results in changed))
        os.makedirs(self.folder, exist_ok=True)
        pairs = []
        text_settings = json.dumps(settings, sort_keys=True)
        for results in changed:
            file_name = tarball_file_name(results.name)
            final = os.path.join(self.folder, file_name)
            temporary = temporary_path(final)
            _write_tarball(temporary, results, text_settings)
            pairs.append((temporary, final))
            self.files[results.name] = file_name
        if pairs:
            publish_together(pairs)
        stale = set(self.files) != self.linked or settings != self.settings or input_dir != self.input_dir
        if stale and (index or not os.path.exists(self.path)):
            self._write_index(settings, input_dir)

    def _write_index(self, settings, input_dir):
        temporary = temporary_path(self.path)
        with h5py.File(temporary, "w", locking=False, libver=FILE_FORMAT) as h5:
            h5.attrs["format"] = FORMAT
            for key, value in settings.items():
                h5.attrs[key] = "" if value is None else value
            h5.attrs["input_dir"] = input_dir or ""
            links = h5.create_group("tarballs")
            for name, file_name in sorted(self.files.items()):
                links[name] = h5py.ExternalLink(f"{CHECKPOINT_FOLDER}/{file_name}", "/")
        publish(temporary, self.path)
        self.settings, self.input_dir, self.linked = dict(settings), input_dir, set(self.files)
        previous = os.path.join(self.output_dir, CHECKPOINT_PREV_0_1)
        if os.path.exists(previous):
            os.remove(previous)  # 0.1.0's previous generation, superseded by this layout

    def _convert(self, path):
        """Write every tarball of the 0.1.0 checkpoint ``path`` to its own file, then the new index."""
        converted = []
        with h5py.File(path, "r", locking=False) as old:
            tarballs = old["tarballs"]
            names = sorted(tarballs)
            os.makedirs(self.folder, exist_ok=True)
            text_settings = json.dumps(self.settings, sort_keys=True)
            require_space(self.output_dir, os.path.getsize(path))
            for name in names:
                try:
                    results = _read_group(tarballs[name], name)
                except (OSError, KeyError, ValueError) as error:
                    log.warning("tarball %s in %s is unreadable (%s); it will be computed again", name, path, error)
                    continue
                final = os.path.join(self.folder, tarball_file_name(name))
                _write_tarball(temporary_path(final), results, text_settings)
                converted.append((temporary_path(final), final))
                self.files[name] = os.path.basename(final)
        if converted:
            publish_together(converted)
        self._write_index(self.settings, self.input_dir)
        log.info("converted the checkpoint of mpicolor %s (%d tarballs) to one file per tarball in %s/",
                 self.settings.get("version"), len(converted), CHECKPOINT_FOLDER)


class CheckpointReader:
    """OUTPUT_DIR's checkpoint, open for reading one tarball at a time; writes nothing.

    Reading tarball by tarball keeps memory to one tarball's results, whatever the collection holds. A
    0.1.0 checkpoint is read in place.

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
        When no part of the checkpoint is readable.
    """

    def __init__(self, output_dir):
        self.checkpoint = Checkpoint(output_dir)
        self.old = None
        old = self.checkpoint._discover()
        if old is not None:
            self.old = h5py.File(old, "r", locking=False)
        elif self.checkpoint.settings is None:
            if self.checkpoint.files or os.path.exists(self.checkpoint.path):
                raise OutputError(f"no part of the checkpoint in {output_dir} is readable; move {CHECKPOINT} "
                                  f"and {CHECKPOINT_FOLDER}/ away to start over")
            raise FileNotFoundError(f"no {CHECKPOINT} in {output_dir}")
        self.settings = dict(self.checkpoint.settings)

    def names(self):
        """The tarballs in the checkpoint, sorted by name."""
        return sorted(self.old["tarballs"]) if self.old is not None else sorted(self.checkpoint.files)

    def frame_count(self, name):
        """How many frames tarball ``name`` holds, from its dataset's shape (nothing is read); DamagedCheckpoint
        when its part cannot be read."""
        try:
            if self.old is not None:
                return self.old["tarballs"][name]["frames"].shape[0]
            with h5py.File(os.path.join(self.checkpoint.folder, self.checkpoint.files[name]), "r",
                           locking=False) as h5:
                return h5["frames"].shape[0]
        except (OSError, KeyError) as error:
            raise DamagedCheckpoint(name, str(error)) from None

    def read(self, name, names_as_bytes=False):
        """One tarball's :class:`TarballResults`; DamagedCheckpoint when its part cannot be read.

        ``names_as_bytes``: the ``frames`` as `read_names_bytes` gives them.
        """
        if self.old is None:
            return self.checkpoint.read(name, names_as_bytes)
        try:
            return _read_group(self.old["tarballs"][name], name, names_as_bytes)
        except (OSError, KeyError, ValueError) as error:
            raise DamagedCheckpoint(f"{self.old.filename}:tarballs/{name}", str(error)) from None

    def close(self):
        if self.old is not None:
            self.old.close()
            self.old = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_tarball_file(path, name, settings, names_as_bytes=False):
    """The results in one tarball file of the checkpoint folder.

    Parameters
    ----------
    path : str
        The file, ``checkpoint/{name}.h5``.
    name : str
        The tarball's name.
    settings : dict
        The run's settings: the file must have been made with the same (its version aside).
    names_as_bytes : bool
        Give the results' ``frames`` as `read_names_bytes` does, for tools that stream millions of names.

    Raises
    ------
    DamagedCheckpoint
        When the file cannot be read or holds results of other settings.
    """
    try:
        with h5py.File(path, "r", locking=False) as h5:
            if h5.attrs.get("format") not in FORMATS:
                raise ValueError(f"format {h5.attrs.get('format')!r} is not {FORMAT!r}")
            stored_settings = json.loads(h5.attrs["settings"])
            results = _read_group(h5, name, names_as_bytes)
    except (OSError, KeyError, ValueError) as error:
        raise DamagedCheckpoint(path, str(error)) from None
    differ = sorted(key for key in set(stored_settings) | set(settings)
                    if key not in MADE_BY and stored_settings.get(key) != settings.get(key))
    if differ:
        raise DamagedCheckpoint(path, f"made with other settings ({', '.join(differ)})")
    results.engine = stored_settings.get("engine")
    return results


def _read_index(path):
    """The index of a checkpoint file: its format, settings, INPUT_DIR and the tarballs it links or holds."""
    with h5py.File(path, "r", locking=False) as h5:
        found = h5.attrs.get("format")
        if found not in (*FORMATS, FORMAT_0_1):
            raise ValueError(f"format {found!r} is not {FORMAT!r}")
        settings = {key: _plain(value) for key, value in h5.attrs.items() if key not in ("format", "input_dir")}
        return {"path": path, "format": found, "settings": settings, "input_dir": _plain(h5.attrs.get("input_dir", "")),
                "linked": set(h5["tarballs"]) if found in FORMATS else set()}


def _write_tarball(path, results, text_settings):
    """Write one tarball's results as a new HDF5 file ``path`` (see the module's docstring)."""
    with h5py.File(path, "w", locking=False, libver=FILE_FORMAT) as h5:
        h5.attrs["format"] = FORMAT
        h5.attrs["name"] = results.name
        h5.attrs["settings"] = text_settings
        names = _names_array(results.frames)
        if names is None:
            h5.create_dataset("frames", data=[name.encode() for name in results.frames],
                              dtype=h5py.string_dtype("utf-8"))
        else:
            fixed = h5py.string_dtype("utf-8", names.dtype.itemsize)
            h5.create_dataset("frames", data=names.view(fixed), dtype=fixed)
        h5.create_dataset("packed", data=results.packed)
        h5.create_dataset("shares", data=results.shares)
        h5.create_dataset("backend", data=results.backend)
        if results.crops is not None:
            h5.create_dataset("crops", data=results.crops)
        if results.seconds is not None:
            h5.create_dataset("seconds", data=results.seconds)
        _write_texts(h5, "failed_members", "failure_reasons", results.failures)
        _write_texts(h5, "noted_members", "notes", results.notes)
        h5.attrs["status"] = results.status
        h5.attrs["skipped"] = json.dumps(results.skipped, sort_keys=True)
        h5.attrs["incomplete"] = results.incomplete or ""
        h5.attrs["error"] = results.error or ""
        if results.fingerprint is not None:
            fingerprint = results.fingerprint
            for attr, value in zip(FINGERPRINT_ATTRS, (fingerprint.size, fingerprint.mtime_ns, fingerprint.members)):
                h5.attrs[attr] = value


def _names_array(names):
    """Frame names as one array of fixed-width UTF-8 bytes, or None when that would be too large (a few very long
    names among many): stored as HDF5 fixed-length strings, 44,470 names take 1 ms to write instead of the 9 ms
    of variable-length ones (rank 0 writes every tarball's). Names hold no NUL (`mpicolor.state.tarballs`)."""
    width = max(map(len, names), default=1)
    if width * len(names) > NAMES_ARRAY_BYTES:
        return None
    try:
        return np.array(names, dtype=np.bytes_)
    except UnicodeEncodeError:  # NumPy encodes ASCII only
        encoded = np.array([name.encode() for name in names], dtype=np.bytes_)
    return encoded if encoded.nbytes <= NAMES_ARRAY_BYTES else None


def _write_texts(group, positions_name, texts_name, texts):
    """Store a position -> text mapping as two datasets; none for an empty mapping (most tarballs)."""
    if not texts:
        return
    positions = sorted(texts)
    group.create_dataset(positions_name, data=np.array(positions, np.int64))
    group.create_dataset(texts_name, data=np.array([texts[p] for p in positions], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))


def _read_texts(group, positions_name, texts_name):
    if positions_name not in group:
        return {}
    return dict(zip(group[positions_name][...].tolist(), group[texts_name].asstr()[...].tolist()))


def read_names_bytes(dataset):
    """A ``frames`` dataset as UTF-8 bytes without a Python object per name (a third of the time of str).

    Fixed-length names are such an array already. Variable-length ones HDF5 converts into fixed-width items;
    a width that one name fills (and so may cut) is read again four times wider.

    Returns
    -------
    ndarray of shape (n_frames,), NUL-padded bytes (``S``)
    """
    if h5py.check_string_dtype(dataset.dtype).length is not None:
        return dataset[...].view(f"S{dataset.dtype.itemsize}")
    width = NAME_BYTES
    while True:
        names = np.zeros(dataset.shape, f"S{width}")
        if not len(names):
            return names
        dataset.read_direct(names)
        if not names.view(np.uint8).reshape(len(names), width)[:, -1].any():
            return names
        width *= 4


def _read_group(group, name, as_bytes=False):
    """A tarball's :class:`TarballResults` from its HDF5 group (a tarball file's root, or 0.1.0's group); its
    ``frames`` by `read_names_bytes` with ``as_bytes``, else a list of str."""
    attrs = group.attrs
    fingerprint = None
    if all(attr in attrs for attr in FINGERPRINT_ATTRS):
        fingerprint = Fingerprint(int(attrs["fingerprint_size"]), int(attrs["fingerprint_mtime_ns"]),
                                  str(attrs["fingerprint_members"]))
    frames = read_names_bytes(group["frames"]) if as_bytes else group["frames"].asstr()[...].tolist()
    return TarballResults(
        name, frames, group["packed"][...], group["shares"][...],
        group["backend"][...], _read_texts(group, "failed_members", "failure_reasons"),
        _read_texts(group, "noted_members", "notes"), json.loads(attrs["skipped"]),
        attrs["incomplete"] or None, attrs["status"], attrs["error"] or None,
        group["crops"][...] if "crops" in group else None, fingerprint,
        seconds=group["seconds"][...] if "seconds" in group else None)


def _plain(value):
    """HDF5 attribute values as plain Python values ('' stands for None)."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if value == "" else value
