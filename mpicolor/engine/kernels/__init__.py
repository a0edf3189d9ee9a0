"""The fast method's numba kernels, one module per concern (compiled as `mpicolor.engine.jit` says).

``histogram``
    The sample's colour histogram, its coarser bins, the exact colours of its heavy bins, and the levels of
    weighted points cut from them.
``kmeans``
    Weighted k-means++ and Lloyd on a level's points; the inertia of a palette on a frame's pixels.
``chroma``
    The sample's pixels with the chroma a decode repeated interpolated again, and the inertias an unsettled frame's
    finalists are compared by there.
``search``
    One frame's whole fast search in one call (`search.fast_search`): the stages of `mpicolor.engine.stages`.

`warm_up` compiles them, or loads them from numba's cache, before a run or a benchmark times anything.
"""

from mpicolor.engine.kernels.search import warm_up

__all__ = ["warm_up"]
