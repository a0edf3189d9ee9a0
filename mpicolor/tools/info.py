"""``mpicolor info``: where every rank computes, and whether MPI and the GPUs are usable."""

import importlib.metadata
import json
import os
import platform
import socket
import sys

PLACEHOLDER_HINT = (
    "On ppc64le `pip install mpich` installs an empty placeholder that provides no MPI: use the site's MPI "
    "(`pip install --no-binary=mpi4py mpi4py` against it) or conda-forge's external MPI builds "
    "(channel conda-forge/label/mpi-external); see docs/power.md.")


def mpich_placeholder():
    """True when the ``mpich`` PyPI package is installed without an MPI library in it (its ppc64le form)."""
    try:
        files = importlib.metadata.distribution("mpich").files or []
    except importlib.metadata.PackageNotFoundError:
        return False
    return not any("libmpi" in os.path.basename(str(path)) for path in files)


def mpi_problem():
    """Why MPI cannot be used here, or None when mpi4py loads an MPI library."""
    placeholder = mpich_placeholder()
    try:
        from mpicolor.job.mpi import library_version
        library_version()
    except (ImportError, RuntimeError, OSError) as error:
        text = f"MPI is not usable: mpi4py cannot load an MPI library ({error})."
        if placeholder or platform.machine() == "ppc64le":
            text += " " + PLACEHOLDER_HINT
        return text
    if placeholder:
        return f"the 'mpich' package here is an empty placeholder. {PLACEHOLDER_HINT}"
    return None


def numba_cache_dir():
    """Where the numba kernels are cached (set by :mod:`mpicolor.engine.kernels` when the package is read-only)."""
    import numba

    from mpicolor.engine import kernels  # noqa: F401  sets NUMBA_CACHE_DIR when it has to
    return (os.environ.get("NUMBA_CACHE_DIR") or numba.config.CACHE_DIR
            or "__pycache__ beside mpicolor/engine/kernels.py")


def rank_report(placement):
    """One rank's line of ``info``, as a JSON-ready dict."""
    return {"host": socket.gethostname(), "rank": placement.rank, "local_rank": placement.local_rank,
            "role": placement.role, "device": placement.device, "fallback": placement.fallback,
            "backend": placement.backend}


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="rank 0 prints one JSON document to stdout")


def main(args, split):
    problem = mpi_problem()
    if problem:
        print(f"mpicolor info: {problem}", file=sys.stderr)
        return 5
    from mpicolor.engine.devices import probe_gpus
    from mpicolor.job.mpi import gather_to_root, library_version, node_ranks, world
    from mpicolor.job.placement import place_rank

    comm, rank, size = world()
    placement = place_rank(rank, node_ranks(comm), split, args.gpus, probe_gpus)
    reports = gather_to_root(rank_report(placement))
    if rank != 0:
        return 0
    document = {"mpi": library_version(), "mpi4py": importlib.metadata.version("mpi4py"), "size": size,
                "numba_cache": numba_cache_dir(), "split": f"{split[0]}:{split[1]}", "ranks": reports}
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    print(f"MPI: {document['mpi']} (mpi4py {document['mpi4py']}), {size} ranks, split {document['split']}")
    print(f"numba cache: {document['numba_cache']}")
    print(f"{'host':20s} {'rank':>5s} {'local':>5s} {'role':4s} {'device':>6s}  computes on")
    for report in reports:
        device = "-" if report["device"] is None else str(report["device"])
        where = report["backend"] + (f" ({report['fallback']})" if report["fallback"] else "")
        print(f"{report['host'][:20]:20s} {report['rank']:5d} {report['local_rank']:5d} {report['role']:4s} "
              f"{device:>6s}  {where}")
    return 0
