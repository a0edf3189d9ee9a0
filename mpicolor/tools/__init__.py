"""The tools over a finished (or interrupted) run's OUTPUT_DIR, and the one that makes INPUT_DIR.

``pack``
    Videos into tarballs of JPEG frames.
``results``
    Reading what a run left in OUTPUT_DIR, one tarball at a time: the checkpoint, else the sqlite files.
``inspect``, ``render``, ``export``
    What OUTPUT_DIR holds; the colour barcode as PNG or SVG; every frame's colours as CSV, JSON Lines or
    Parquet.
``info``
    Where each rank of a launch would compute, and which MPI it loaded.

The top of the house: may import :mod:`mpicolor.job`, :mod:`mpicolor.engine` and :mod:`mpicolor.state`.
"""
