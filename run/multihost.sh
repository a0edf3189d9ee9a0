#!/usr/bin/env bash
# mpicolor on several hosts over ssh, without a batch system:
#   bash run/multihost.sh HOSTFILE INPUT_DIR OUTPUT_DIR [RANKS] [mpicolor run options...]
# HOSTFILE in the syntax of the MPI in use (see hostfiles/); RANKS defaults to the sum of its slots.
# Needs passwordless ssh to every host and the same paths everywhere (the repository, its .venv, INPUT_DIR
# and OUTPUT_DIR on a shared file system). Rerunning the same command resumes; exit status 4 means
# interrupted after a final checkpoint.
set -euo pipefail
HOSTFILE="${1:?usage: bash run/multihost.sh HOSTFILE INPUT_DIR OUTPUT_DIR [RANKS] [mpicolor run options...]}"
shift
HOSTFILE="$(realpath "$HOSTFILE")" exec bash "$(dirname "$0")/local.sh" "$@"
