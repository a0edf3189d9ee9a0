"""Files that appear under their final name only when complete.

Every file is written under a hidden temporary name in its final folder, flushed and fsynced, renamed over
the final name, and the folder is fsynced. A killed job therefore leaves either the previous or the next
version of a file, never half of one; a rerun takes temporary files it finds for what they are and removes
them.
"""

import errno
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".partial"


def fsync_path(path):
    """fsync a file or a folder (a rename is durable only once its folder is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(final):
    """The hidden temporary name beside ``final`` that a rerun knows to be stale."""
    return os.path.join(os.path.dirname(final), "." + os.path.basename(final) + TEMP_SUFFIX)


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
            list(pool.map(fsync_path, [temporary for temporary, _ in pairs]))
    else:
        fsync_path(pairs[0][0])
    for temporary, final in pairs:
        os.replace(temporary, final)
    fsync_path(os.path.dirname(pairs[0][1]))


def write_atomically(path, data):
    """Write ``data`` (bytes) under a temporary name beside ``path``, fsync, rename: never a half file."""
    temporary = temporary_path(os.path.abspath(path))
    with open(temporary, "wb") as stream:
        stream.write(data)
    publish(temporary, os.path.abspath(path))


def write_json(path, document):
    """Write a JSON document atomically."""
    write_atomically(path, json.dumps(document, indent=1, sort_keys=True).encode())


def require_space(folder, needed):
    """Raise ENOSPC before writing ``needed`` bytes into ``folder`` if they would not fit.

    HDF5 does not fail cleanly on a full disk (seen here: a crash inside the library), so the checkpoint
    checks first, with room to spare for HDF5's own metadata.
    """
    free = shutil.disk_usage(folder).free
    wanted = 2 * needed + (1 << 20)
    if free < wanted:
        raise OSError(errno.ENOSPC, f"No space left on device (the outputs need about {wanted >> 10} KiB, "
                                    f"{free >> 10} KiB are free)", folder)


def remove_stale_temporaries(folder):
    """Remove the temporary files a killed run left in ``folder``; call it with the run's lock held, so that
    all of them are stale."""
    for entry in os.listdir(folder):
        if entry.startswith(".") and entry.endswith(TEMP_SUFFIX):
            log.info("removing %s left by an interrupted run", os.path.join(os.path.basename(folder), entry))
            os.remove(os.path.join(folder, entry))
