"""OUTPUT_DIR itself: its files' names, creating and checking it, and the lock that keeps a second run out."""

import fcntl
import logging
import os
import socket
import time

log = logging.getLogger(__name__)

RUN_SUMMARY = "run-summary.json"
# rank 0's log of every run, appended
RUN_LOG = "run.log"
LOCK = ".mpicolor.lock"


class OutputError(RuntimeError):
    """OUTPUT_DIR cannot be used: locked by another run, unwritable, or holds results of other settings."""


def prepare_output_dir(output_dir):
    """Create OUTPUT_DIR if needed and check that this user can write into it."""
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise OutputError(f"OUTPUT_DIR {output_dir} cannot be created: {error.strerror}") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise OutputError(f"OUTPUT_DIR {output_dir} is not writable by this user")


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
