"""What a rerun may reuse of a checkpoint: results of the same settings, of the same tarball.

The settings that change the numbers must be those the checkpoint was made with (else the run is refused).
A tarball's stored results are reused only when its fingerprint (size, modification time, member table) is
the one they were computed from, and when the method's engine that computed them is this run's; else the
tarball is computed again, with a warning that names it. INPUT_DIR is not a setting: data moved to another
folder resumes when the fingerprints match.
"""

import logging

from mpicolor.state.results import UNREADABLE

log = logging.getLogger(__name__)

# Settings that change the numbers in the outputs: a resumed run must use the same ones.
RESULT_SETTINGS = ("clusters", "method", "seed", "scale", "max_pixels", "simulate", "crop_borders", "fps")
# Stored settings that say what made a file rather than what the run asked: they may differ between the
# files of one checkpoint, and never refuse a run.
MADE_BY = ("version", "engine")
# What every output file records of its run (the checkpoint's settings, a sqlite file's info table beside its
# counts): the result settings, the label that names the sqlite files, and what made it.
STORED_SETTINGS = (*RESULT_SETTINGS, "label", *MADE_BY)
# The engine of results that 0.1.0 stored, which recorded none.
ENGINE_OF_0_1_0 = 1


def settings_conflict(stored, asked):
    """Why results stored with settings ``stored`` cannot be resumed by a run asking ``asked``, or None.

    Parameters
    ----------
    stored, asked : dict
        Settings by name; those of `MADE_BY` may differ.

    Returns
    -------
    str or None
        ``"clusters=5, ..."`` pairs of what was stored and what is asked, or None when they agree.
    """
    differ = [key for key in asked if key not in MADE_BY and stored.get(key) != asked[key]]
    if not differ:
        return None
    was = ", ".join(f"{key}={stored.get(key)!r}" for key in differ)
    now = ", ".join(f"{key}={asked[key]!r}" for key in differ)
    return f"results made with {was}; this run asks for {now}"


def reusable(stored, index, clusters, engine):
    """The stored results of a tarball that a run may go on from, or None to compute it from scratch.

    Parameters
    ----------
    stored : TarballResults or None
        What the checkpoint holds for the tarball.
    index : mpicolor.job.worker.IndexedTarball
        The tarball as it is now: member names, skipped members, fingerprint.
    clusters : int
    engine : int
        The version of this run's method (`mpicolor.engine.palette.ENGINE_VERSIONS`).

    Returns
    -------
    TarballResults or None
        ``stored``, brought up to date with the index (skipped members, truncation, fingerprint, status), when
        it belongs to this very tarball; None otherwise (a warning says why when the tarball changed).
    """
    if stored is None or stored.status == UNREADABLE or stored.packed.shape[1] != clusters:
        return None
    made_by = ENGINE_OF_0_1_0 if stored.engine is None else stored.engine
    if made_by != engine:
        log.warning("%s: its stored results come from version %d of the method, this run's is version %d; "
                    "computing it again, so that its frames all come from one", stored.name, made_by, engine)
        return None
    if stored.fingerprint is None:
        # a 0.1.0 checkpoint knew only the member names
        same = stored.frames == index.names
        reason = "other members"
    else:
        same = stored.fingerprint == index.fingerprint
        reason = _difference(stored.fingerprint, index.fingerprint)
    if not same:
        log.warning("%s changed since its results were computed (%s); computing it again", stored.name, reason)
        return None
    stored.skipped, stored.incomplete, stored.fingerprint = index.skipped, index.incomplete, index.fingerprint
    stored.settle()  # a tarball that ended incomplete, its unread frames pending, is partial again
    return stored


def _difference(stored, now):
    """What differs between two fingerprints, in words."""
    if stored.size != now.size:
        return f"size {stored.size} bytes, now {now.size}"
    if stored.members != now.members:
        return "another member table: names, offsets or sizes"
    return "another modification time"
