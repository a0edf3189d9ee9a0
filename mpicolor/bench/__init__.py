"""The benchmarks behind ``mpicolor bench``: every performance claim in the docs comes from one of them.

``kernel``
    One frame at a time on one core: decode and palette per method, side by side, by frame size.
``run``
    Whole runs under real ``mpiexec`` (`run.timed_run`), and ``bench run``: 1 and 2 ranks, a CPU hog.
``scaling``
    Strong and weak scaling of whole runs, real or simulated frames.
``state``
    The run's state at the collection's scale: frames/s, bytes written and save times, 25 to 250 tarballs.
``tools``
    inspect, render and export over 11.1 million frames: time, rows/s and peak memory.

May import :mod:`mpicolor.engine` and :mod:`mpicolor.state` (and start ``mpicolor run`` as a process);
never :mod:`mpicolor.job` or :mod:`mpicolor.tools`, which it measures from the outside.
"""
