#!/usr/bin/env bash
# Start-up of MPICH and Open MPI side by side: bash run/mpi-startup.sh [RANKS...] (default 2 8 32)
# Times, five times per MPI and rank count with the two MPIs alternating, `mpiexec -n N python -c ...` that starts
# MPI and passes a barrier, and `mpiexec -n N mpicolor info --json` (MPI, mpicolor's imports, the node split, a
# gather; no frames); prints the medians. Makes both environments on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ranks=("${@:-2 8 32}")
for mpi in mpich openmpi; do
    (MPICOLOR_MPI="$mpi" source "$here/env.sh")
done
repo="$(cd "$here/.." && pwd)"
python3 - "$repo" ${ranks[@]} <<'PYTHON'
import os, statistics, subprocess, sys, time
repo, counts = sys.argv[1], [int(n) for n in sys.argv[2:]]
venvs = {"MPICH": f"{repo}/.venv", "Open MPI": f"{repo}/.venv-openmpi"}
flags = {"MPICH": [], "Open MPI": ["--oversubscribe", "--bind-to", "none"] + ["--allow-run-as-root"] * (os.geteuid() == 0)}
programs = {"barrier": ["python", "-c", "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"],
            "mpicolor info": ["mpicolor", "info", "--json"]}
print(f"{'program':14} {'ranks':>5}  {'MPICH s':>8}  {'Open MPI s':>10}  ratio")
for program, argv in programs.items():
    for n in counts:
        times = {name: [] for name in venvs}
        for repeat in range(5):
            for name in (list(venvs) if repeat % 2 == 0 else list(venvs)[::-1]):
                command = [f"{venvs[name]}/bin/mpiexec", *flags[name], "-n", str(n), f"{venvs[name]}/bin/{argv[0]}",
                           *argv[1:]]
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - started)
        mpich, open_mpi = (statistics.median(times[name]) for name in venvs)
        print(f"{program:14} {n:5d}  {mpich:8.2f}  {open_mpi:10.2f}  {open_mpi / mpich:5.1f}x")
PYTHON
