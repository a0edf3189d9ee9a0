#!/usr/bin/env bash
# mpicolor on this machine: bash run/local.sh INPUT_DIR OUTPUT_DIR [RANKS] [mpicolor run options...]
# e.g. bash run/local.sh frames/ colours/ 18 --split 14:4 --gpus 2
# RANKS defaults to one per hardware thread (or to the slots of $HOSTFILE: run/multihost.sh sets it).
# Rerunning the same command resumes from OUTPUT_DIR's checkpoint; exit status 4 means it was interrupted
# (SIGUSR1, or SIGTERM/SIGINT under MPICH) after writing a final checkpoint, so run it again.
set -euo pipefail
usage="usage: bash run/local.sh INPUT_DIR OUTPUT_DIR [RANKS] [mpicolor run options...]"
INPUT="${1:?$usage}"
OUTPUT="${2:?$usage}"
HOSTFILE="${HOSTFILE:-}"
if [ -n "$HOSTFILE" ]; then
    # both hostfile syntaxes: "host:slots" (MPICH hydra) and "host slots=N" (Open MPI)
    default_ranks="$(awk -F '(:|[[:space:]]+slots=)' '!/^[[:space:]]*(#|$)/ { n += (NF > 1 ? $2 : 1) } END { print n }' "$HOSTFILE")"
else
    default_ranks="$(nproc)"
fi
if [[ "${3:-}" =~ ^[0-9]+$ ]]; then
    RANKS="$3"
    shift 3
else
    RANKS="$default_ranks"
    shift 2
fi
# seconds of work a crash or a kill can cost at most
CHECKPOINT_EVERY="${CHECKPOINT_EVERY:-60}"

source "$(dirname "$0")/env.sh"

launcher=(mpiexec -n "$RANKS")
if mpiexec --version 2>&1 | grep -q "Open MPI"; then
    # Open MPI refuses more ranks than cores without --oversubscribe and root without --allow-run-as-root;
    # bound ranks beyond the core count would share cores; and it passes PATH to other hosts only with -x
    launcher+=(--oversubscribe --bind-to none -x PATH)
    [ "$(id -u)" -ne 0 ] || launcher+=(--allow-run-as-root)
    [ -z "$HOSTFILE" ] || launcher+=(--hostfile "$HOSTFILE")
else
    # MPICH hydra oversubscribes and runs as root as it is
    [ -z "$HOSTFILE" ] || launcher+=(-f "$HOSTFILE")
fi
# the absolute path: other hosts share the file system, not this shell's PATH
exec "${launcher[@]}" "$(command -v mpicolor)" run "$INPUT" "$OUTPUT" --checkpoint-every "$CHECKPOINT_EVERY" "$@"
