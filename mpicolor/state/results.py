"""One data set's results (a tarball's or a video's) as rank 0 gathers them, and the per-frame backend codes and
tarball statuses."""

from dataclasses import dataclass, field, replace

import numpy as np

# backend codes per frame: what computed it, or that it has not been computed or failed
PENDING, CPU, GPU, FAILED = 0, 1, 2, 3
BACKEND_NAMES = {CPU: "cpu", GPU: "gpu", FAILED: "failed"}
BACKEND_CODES = {name: code for code, name in BACKEND_NAMES.items()}
# a frame read back from a sqlite file: computed, by a backend the file does not record
COMPUTED_UNKNOWN = 255

PARTIAL, COMPLETE, INCOMPLETE, UNREADABLE = "partial", "complete", "incomplete", "unreadable"
CROP_SIDES = ("top", "bottom", "left", "right")


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
    fingerprint : mpicolor.state.tarballs.Fingerprint or None
        What identifies the tarball these results belong to (None: not known, e.g. a 0.1.0 checkpoint).
    engine : int or None
        The version of the method's computation that made stored results (`mpicolor.engine.palette.ENGINE_VERSIONS`);
        None for results computed in this run, or stored by 0.1.0.
    seconds : ndarray of shape (n_frames,), float64, or None
        A video's frames' times (`mpicolor.state.videos.VideoIndex.seconds`); None for a tarball.
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
    fingerprint: object = None
    engine: int | None = None
    seconds: np.ndarray | None = None

    @classmethod
    def empty(cls, name, frames, clusters, skipped=None, incomplete=None, crops=False, fingerprint=None,
              seconds=None):
        """Results with no frame computed yet (``crops``: keep each frame's crop too; ``seconds``: a video's
        frames' times)."""
        n_frames = len(frames)
        return cls(name, list(frames), np.zeros((n_frames, clusters), np.uint32),
                   np.zeros((n_frames, clusters), np.float32), np.zeros(n_frames, np.uint8),
                   skipped=dict(skipped or {}), incomplete=incomplete,
                   crops=np.zeros((n_frames, 4), np.uint16) if crops else None, fingerprint=fingerprint,
                   seconds=None if seconds is None else np.asarray(seconds, np.float64))

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

    def copy(self):
        """A copy that later :meth:`record` calls on this one leave alone."""
        return replace(self, frames=list(self.frames), packed=self.packed.copy(), shares=self.shares.copy(),
                       backend=self.backend.copy(), failures=dict(self.failures), notes=dict(self.notes),
                       skipped=dict(self.skipped), crops=None if self.crops is None else self.crops.copy(),
                       seconds=None if self.seconds is None else self.seconds.copy())

    def nbytes(self):
        """Bytes these results take in a file, generously (names and texts included)."""
        texts = (*self.failures.values(), *self.notes.values())
        # map rather than a generator: rank 0 asks this of 44,470 names per save
        return (self.packed.nbytes + self.shares.nbytes + self.backend.nbytes
                + (0 if self.seconds is None else self.seconds.nbytes)
                + sum(map(len, self.frames)) + 16 * len(self.frames) + sum(map(len, texts)) + 24 * len(texts))
