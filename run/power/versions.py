"""Print the versions of mpicolor's dependencies as this Python imports them, one `name version` a line."""

import importlib
import platform

MODULES = {"numpy": "numpy", "numba": "numba", "llvmlite": "llvmlite", "scikit-learn": "sklearn",
           "opencv": "cv2", "simplejpeg": "simplejpeg", "h5py": "h5py", "mpi4py": "mpi4py",
           "threadpoolctl": "threadpoolctl", "pytest": "pytest"}

print(f"python {platform.python_version()} ({platform.machine()})")
for name, module in MODULES.items():
    print(name, importlib.import_module(module).__version__)
