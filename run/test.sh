#!/usr/bin/env bash
# The test suite, each MPI in its own virtual environment (made on first use): bash run/test.sh [pytest args]
# The whole suite runs under MPICH; then the tests that start mpiexec (marker mpi) run again under Open MPI, the
# MPI of most Power clusters (IBM Spectrum MPI): the other tests do not use MPI. MPICOLOR_MPIS="openmpi" (or
# "mpich") runs under that MPI alone; the first MPI named runs every test.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
status=0
only_mpi=""
for mpi in ${MPICOLOR_MPIS:-mpich openmpi}; do
    echo "run/test.sh: under $mpi${only_mpi:+, the tests marked mpi}" >&2
    (
        export MPICOLOR_MPI="$mpi" MPICOLOR_EXTRAS="$mpi,test" MPICOLOR_TESTS_MPI_ONLY="$only_mpi"
        source "$here/env.sh"
        cd "$repo"
        exec python -m pytest -q "$@"
    )
    code=$?
    # 5: no test was selected, as when the arguments name only tests that do not start mpiexec
    if [ "$code" -ne 0 ] && { [ "$code" -ne 5 ] || [ -z "$only_mpi" ]; }; then
        echo "run/test.sh: the tests failed under $mpi (status $code)" >&2
        status=1
    fi
    only_mpi=1
done
exit "$status"
