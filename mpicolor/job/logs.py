"""Logging with the MPI rank on every line."""

import logging
import socket
import sys


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
