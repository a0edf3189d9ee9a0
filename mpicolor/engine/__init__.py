"""The engine of one frame: its bytes to its dominant colours, on a CPU or on a GPU.

``decode``
    JPEG and PNG bytes to BGR pixels: the header checked before anything is read, simplejpeg or OpenCV.
``palette``
    The colours of a decoded frame: the original k-means (``"seed"``) and the fast method (``"fast"``).
``stages``
    The fast method's stages written once: its settings and the decisions both of its engines take.
``kernels``
    The fast method's numba kernels (``histogram``, ``kmeans``, ``search``): its CPU engine.
``gpu``
    The fast method as array code for CuPy (NumPy runs the same code in tests), cuML for ``"seed"``.
``jit``
    How the numba functions are compiled, and where numba caches them.
``borders``
    Letterbox and pillarbox bars, found and cropped before the palette.
``devices``
    Which GPUs this process can use, probed without importing CuPy at start-up.
``yuv``
    A decoded video frame's YUV planes to upright BGR with FFmpeg's matrices and ranges: the whole frame, or
    only the pixels the fast palette samples.

The bottom of the house: imports only itself (and numpy, numba, OpenCV, simplejpeg, scikit-learn;
CuPy and cuML only when a GPU is asked for). No MPI, no files: bytes and arrays in, arrays out.
:mod:`mpicolor.palette` keeps the public names (``extract_palette``, ``decode_frame``, ``BadFrame``).
"""
