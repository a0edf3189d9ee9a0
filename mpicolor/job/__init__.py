"""The run across ranks: ``mpicolor run`` from the command line's settings to the last output.

``config``
    :class:`RunConfig`, the run's settings, validated once on rank 0.
``placement``
    Which rank computes on a GPU and on which device: pure functions of rank, node and settings.
``coordinator``
    Rank 0's bookkeeping: which tarballs to compute, what each frame's state is, when to save; and
    :func:`run_serial`, the whole run in one process.
``schedule``
    The scheduling policy (chunk sizes, the tail, indexing ahead) and the ledger of what each worker holds.
``report``
    What a run did: tarball outcomes, per-rank numbers, the summary and ``run-summary.json``.
``worker``
    A rank's share of the work: read a chunk's frames by offset, decode them, compute their palettes.
``mpi``
    The only module that imports mpi4py: rank 0's serve loop, the workers' loop, the job's start and end.
``progress``, ``logs``, ``launch``
    Rank 0's progress display, logging with the rank on every line, what the launcher says before MPI starts.

May import :mod:`mpicolor.engine` and :mod:`mpicolor.state`; never :mod:`mpicolor.tools` or
:mod:`mpicolor.bench`.
"""
