"""A run's data sets: the tarballs and the videos of INPUT_DIR, one sorted list for both kinds.

A data set is a file whose frames become one ``hist_{name}_{label}.sqlite``: a tarball of frames
(`mpicolor.state.tarballs`) or a video (`mpicolor.state.videos`). Both are indexed, fingerprinted, cut into
chunks, checkpointed and resumed the same way; only how a rank gets a frame's pixels differs.
"""

import os

from mpicolor.state.tarballs import find_tarballs
from mpicolor.state.videos import VIDEO_SUFFIXES, find_videos


def is_video(path):
    """Whether ``path`` names a video data set (one of `VIDEO_SUFFIXES`, case-insensitive) rather than a tarball."""
    return os.fspath(path).lower().endswith(VIDEO_SUFFIXES)


def find_data_sets(input_dir):
    """List the data sets of a directory: its tarballs and its videos.

    Parameters
    ----------
    input_dir : str
        The directory; subdirectories are not searched.

    Returns
    -------
    data_sets : list of str
        Absolute paths, tarballs and videos together, sorted by file name (code-point order).
    rejected : list of (str, str)
        ``(path, reason)`` for each entry refused up front (named like a data set, not a regular file).

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        If `input_dir` does not exist or is not a directory.
    """
    tarballs, rejected_tarballs = find_tarballs(input_dir)
    videos, rejected_videos = find_videos(input_dir)
    return (sorted(tarballs + videos, key=os.path.basename),
            sorted(rejected_tarballs + rejected_videos, key=lambda pair: os.path.basename(pair[0])))
