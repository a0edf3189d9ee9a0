"""Print what mpicolor runs with, one `name<TAB>version` a line: Python, its dependencies, the MPI library."""

import importlib
import importlib.metadata
import platform

from mpicolor.job.mpi import library_version

MODULES = {"numpy": "numpy", "numba": "numba", "llvmlite": "llvmlite", "scikit-learn": "sklearn",
           "opencv": "cv2", "simplejpeg": "simplejpeg", "h5py": "h5py", "threadpoolctl": "threadpoolctl"}

print(f"python\t{platform.python_version()} ({platform.machine()})")
for name, module in MODULES.items():
    print(f"{name}\t{importlib.import_module(module).__version__}")
print(f"mpi4py\t{importlib.metadata.version('mpi4py')}")
print(f"MPI\t{' '.join(library_version().split(',')[0].split())}")
