"""What GPUs this process can use; CuPy is imported lazily and only here and in the GPU kernels."""


def probe_gpus():
    """Count the CUDA devices this process sees.

    Returns
    -------
    count : int
        Number of usable devices (0 when none can be used).
    reason : str or None
        Why no device can be used, or None when ``count > 0``.
    """
    try:
        import cupy
    except ImportError:
        return 0, "CuPy is not installed (pip install 'mpicolor[gpu]')"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        # Without a driver CuPy raises already here; catch the class, not the message.
        return 0, f"CUDA runtime error: {error}"
    if count == 0:
        return 0, "no CUDA device visible"
    return count, None
