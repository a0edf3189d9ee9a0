#!/usr/bin/env bash
# Run the test suite in a fresh virtual environment (made on first use): bash run/test.sh [pytest args]
MPICOLOR_EXTRAS="${MPICOLOR_EXTRAS:-mpich,test}"
source "$(dirname "$0")/env.sh"
cd "$repo"
exec python -m pytest -q "$@"
