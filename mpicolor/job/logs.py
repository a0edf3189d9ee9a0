"""Logging with the MPI rank on every line, to stderr and to OUTPUT_DIR's run log."""

import logging
import socket
import sys

log = logging.getLogger(__name__)


class RankFilter(logging.Filter):
    """Add ``rank`` and ``host`` to every record, so that interleaved output of many ranks stays readable."""

    def __init__(self, rank, size):
        super().__init__()
        self.rank = rank
        self.width = len(str(max(size - 1, 0)))
        self.host = socket.gethostname()

    def filter(self, record):
        record.rank = str(self.rank).rjust(self.width)
        record.host = self.host
        return True


def setup_logging(rank=0, size=1, level=logging.INFO):
    """Send the package's log records to stderr, one line each, prefixed with time and rank.

    Parameters
    ----------
    rank, size : int
        This process's rank and the number of ranks; rank is shown on every line.
    level : int
        Logging level of the ``mpicolor`` logger.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RankFilter(rank, size))
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [rank %(rank)s] %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("mpicolor")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


class RunLog(logging.FileHandler):
    """Rank 0's log records appended to a file in OUTPUT_DIR, as they go to stderr.

    The file keeps what a launcher drops: Open MPI's ``mpiexec`` stops passing on the ranks' output once it is
    told to end the job, so the last checkpoint's lines reach only this file. A record that cannot be written
    (a full disk) ends the file's part, with one line on stderr, instead of a traceback per record.
    """

    def __init__(self, path):
        super().__init__(path, mode="a", encoding="utf-8")
        stderr = logging.getLogger("mpicolor").handlers
        if stderr:  # the same line as on stderr: time, rank, level
            self.setFormatter(stderr[0].formatter)
            for rank_filter in stderr[0].filters:
                self.addFilter(rank_filter)
        logging.getLogger("mpicolor").addHandler(self)

    def handleError(self, record):
        error = sys.exc_info()[1]
        self.close()
        log.warning("cannot write the run log %s (%s); the rest of the log goes to stderr only", self.baseFilename,
                    getattr(error, "strerror", None) or error)

    def close(self):
        logging.getLogger("mpicolor").removeHandler(self)
        super().close()
