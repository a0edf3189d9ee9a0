# Sourced by the run/ scripts: a virtual environment with mpicolor and the MPICH wheel, made on first use.
# MPICOLOR_VENV chooses where (default .venv in the repository); MPICOLOR_EXTRAS the extras to install.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MPICOLOR_VENV:-$repo/.venv}"
extras="${MPICOLOR_EXTRAS:-mpich}"
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
