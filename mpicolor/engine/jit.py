"""How the engine's numba functions are compiled: numba's options, and the folder numba caches them in.

Every module of numba functions (`mpicolor.engine.kernels`, `mpicolor.engine.stages`) takes its decorator from
here (``from mpicolor.engine.jit import kernel``), so that `configure_cache` has run before numba is imported and
before any function is decorated: numba reads ``NUMBA_CACHE_DIR`` at its import.
"""

import os

ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))


def cache_dir(environ=None, engine_dir=ENGINE_DIR):
    """The folder numba should cache the kernels in, or None for numba's own choice.

    numba's default is a ``__pycache__`` folder beside each kernel module; a read-only install (site-packages on a
    cluster) cannot hold it, and numba would then fail to cache. A folder the user chose (``NUMBA_CACHE_DIR``)
    always stands.

    Parameters
    ----------
    environ : mapping, default None
        The environment; None reads ``os.environ``.
    engine_dir : str
        The folder of `mpicolor.engine`, beside whose modules numba caches by default.

    Returns
    -------
    str or None
        ``$XDG_CACHE_HOME/mpicolor/numba`` (``~/.cache`` without ``XDG_CACHE_HOME``) when ``engine_dir`` is not
        writable and the user chose no folder, else None.
    """
    environ = os.environ if environ is None else environ
    if environ.get("NUMBA_CACHE_DIR") or os.access(engine_dir, os.W_OK):
        return None
    cache_home = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "mpicolor", "numba")


def configure_cache():
    """Give numba the folder of `cache_dir` through ``NUMBA_CACHE_DIR``, when it needs one; before numba is imported.

    Returns
    -------
    str
        Where the kernels are cached: the chosen folder, or ``__pycache__`` folders beside the engine's modules.
    """
    folder = cache_dir()
    if folder:
        os.environ["NUMBA_CACHE_DIR"] = folder
    return os.environ.get("NUMBA_CACHE_DIR") or f"__pycache__ beside the modules of {ENGINE_DIR}"


CACHE = configure_cache()

from numba import njit  # noqa: E402  (after configure_cache: numba reads NUMBA_CACHE_DIR at import)
from numba.core import config  # noqa: E402

config.reload_config()  # numba imported earlier (by a caller) read the environment before configure_cache

# cached on disk: a fresh process loads them in under a second instead of compiling them for about 15 s
kernel = njit(cache=True, nogil=True)
