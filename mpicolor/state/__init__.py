"""The state of a run on disk: what rank 0 writes into OUTPUT_DIR, and how a rerun finds it again.

One module per concept, as h5py's ``_hl`` has them:

``results``
    :class:`TarballResults`, one tarball's palettes as rank 0 gathers them, and the per-frame codes.
``atomic``
    Files that appear under their final name only when complete (write, fsync, rename, fsync the folder).
``output_dir``
    OUTPUT_DIR itself: creating and checking it, the lock that keeps a second run out, its file names.
``sqlite``
    The original's output, ``hist_{tarball}_{label}.sqlite`` per finished tarball.
``checkpoint``
    The HDF5 checkpoint: one file per tarball, joined by ``checkpoint.h5``.
``resume``
    What a rerun may reuse of what the checkpoint holds: the settings, and each tarball by its fingerprint
    and the engine that computed it.
``tarballs``
    The tar index: members' names, data offsets and sizes, read from the headers; a tarball's fingerprint.
``videos``
    A video as a data set: its index from the packets (frame times, keyframes, fingerprint), ``pack``'s frame
    names and ``--fps`` rule, and one segment of frames decoded alone (PyAV, the ``video`` extra).
``writer``
    The thread that writes checkpoint files for rank 0 while it goes on coordinating.

Plain Python with no MPI: rank 0 calls these, workers index tarballs and write the sqlite files of tarballs
complete in the checkpoint, the tools read them, and the tests call them in process. Imports nothing of
mpicolor but itself.
"""
