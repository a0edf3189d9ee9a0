"""The settings of a run: one frozen dataclass, validated once on rank 0 and broadcast."""

import os
from dataclasses import asdict, dataclass

from mpicolor import __version__
from mpicolor.engine.palette import ENGINE_VERSIONS, METHODS
from mpicolor.state.resume import RESULT_SETTINGS, STORED_SETTINGS

# The engine version of --simulate's stand-in palettes (`mpicolor.job.worker.stand_in_palette`), unchanged
# since 0.1.0, whatever the method.
STAND_IN_ENGINE = 1


@dataclass(frozen=True)
class RunConfig:
    """What ``mpicolor run`` does.

    Attributes
    ----------
    input_dir, output_dir : str
        Folder of data sets (tarballs and videos), and folder of the outputs (sqlite files and the HDF5
        checkpoint).
    label : str
        The ``{label}`` in ``hist_{tarball}_{label}.sqlite``.
    clusters : int
        Colours per frame.
    method : str
        ``"fast"`` (histogram k-means) or ``"seed"`` (the original's KMeans on all pixels).
    seed : int
        Random seed of every frame's k-means, the same for every frame so that results do not depend on
        which rank computed them.
    scale : int or None
        JPEG decode scale (1, 2, 4, 8); None takes the method's default.
    max_pixels : int
        Frames whose header declares more pixels are refused before decoding.
    split : (int, int)
        The CPU:GPU split rule.
    gpus : int or None
        GPUs per node; None asks the CUDA runtime.
    checkpoint_every : float
        Seconds between checkpoints (also written at every tarball's end).
    simulate : float or None
        When set, every frame costs this many seconds of sleep instead of its palette (benchmarks).
    progress : str
        ``auto``, ``bar`` or ``log``: how rank 0 shows progress (see :class:`~mpicolor.job.progress.Progress`).
    crop_borders : bool
        Leave each frame's letterbox and pillarbox bars out of its palette (:mod:`mpicolor.engine.borders`); off by
        default so that results stay comparable with the original's.
    stall_timeout : float
        Seconds a worker may hold work without answering before rank 0 gives up on it and hands its work to
        the others.
    node_size : int or None
        Ranks per node for the node tier, every ``node_size`` consecutive ranks a node; None finds the nodes with
        an MPI_COMM_TYPE_SHARED split (some launchers and containers misreport them).
    fps : float or None
        A video's frames kept per second of its time, as ``mpicolor pack --fps`` keeps them
        (`mpicolor.state.videos.FpsSampler`); None keeps every frame. Tarballs are not sampled.
    gpu_memory : int or None
        Device bytes a GPU rank may hold (``MPICOLOR_GPU_MEMORY``, read and checked on rank 0 by
        :func:`mpicolor.engine.gpu.memory_limit`); None takes that function's answer where the device is opened.
    """

    input_dir: str
    output_dir: str
    label: str = "db"
    clusters: int = 5
    method: str = "fast"
    seed: int = 0
    scale: int | None = None
    max_pixels: int = 50_000_000
    split: tuple = (14, 4)
    gpus: int | None = None
    checkpoint_every: float = 60.0
    simulate: float | None = None
    progress: str = "auto"
    crop_borders: bool = False
    stall_timeout: float = 600.0
    node_size: int | None = None
    gpu_memory: int | None = None
    fps: float | None = None
    version: str = __version__

    def __post_init__(self):
        if self.clusters < 1:
            raise ValueError(f"clusters={self.clusters} should be >= 1")
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} should be one of {', '.join(METHODS)}")
        if self.scale not in (None, 1, 2, 4, 8):
            raise ValueError(f"scale={self.scale} should be one of 1, 2, 4, 8")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels={self.max_pixels} should be >= 1")
        if self.checkpoint_every <= 0:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} should be > 0 seconds")
        if self.stall_timeout <= 0:
            raise ValueError(f"stall_timeout={self.stall_timeout} should be > 0 seconds")
        if self.node_size is not None and self.node_size < 1:
            raise ValueError(f"node_size={self.node_size} should be >= 1 ranks")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps={self.fps} should be > 0 frames per second")
        if self.gpus is not None and self.gpus < 0:
            raise ValueError(f"gpus={self.gpus} should be >= 0")
        if self.progress not in ("auto", "bar", "log"):
            raise ValueError(f"progress={self.progress!r} should be one of auto, bar, log")
        if self.simulate is not None and self.simulate < 0:
            raise ValueError(f"simulate={self.simulate} should be >= 0 seconds")
        if not self.label or os.sep in self.label or self.label != self.label.strip():
            raise ValueError(f"label={self.label!r} should be a non-empty file-name part without '{os.sep}'")

    def result_settings(self):
        """The settings that a checkpoint must share with a run resuming from it, as a dict."""
        values = asdict(self)
        return {name: values[name] for name in RESULT_SETTINGS}

    def stored_settings(self):
        """What every output file records of this run: the result settings, the label, the version and the
        method's engine (`mpicolor.engine.palette.ENGINE_VERSIONS`)."""
        values = dict(asdict(self), engine=self.engine())
        return {name: values[name] for name in STORED_SETTINGS}

    def engine(self):
        """The version of the computation that makes this run's palettes: the method's, or the simulated
        stand-ins'."""
        return STAND_IN_ENGINE if self.simulate is not None else ENGINE_VERSIONS[self.method]
