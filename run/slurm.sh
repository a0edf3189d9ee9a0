#!/usr/bin/env bash
# mpicolor under Slurm: sbatch run/slurm.sh INPUT_DIR OUTPUT_DIR
# Activate the environment with mpicolor and the site's MPI first (see "Installing on Power"): the job
# inherits it. Resubmitting the same command resumes from OUTPUT_DIR's checkpoint, and the job does that by
# itself: when the time limit interrupts it after a checkpoint, it requeues itself (up to MAX_REQUEUES).
#SBATCH --job-name=mpicolor
#SBATCH --nodes=2
# a multiple of C+G = 18 per node, so that every node gets the same 112 CPU and 32 GPU ranks
# (hostfiles/README.md); 144 of a Power node's ~160 hardware threads leave room for the OS
#SBATCH --ntasks-per-node=144
#SBATCH --gpus-per-node=2
#SBATCH --time=02:00:00
# SIGUSR1 to this script 120 s before the time limit; it passes it to srun and so to every rank, and rank 0
# writes a final checkpoint and ends the job with exit status 4. SIGUSR1 is the warning every launcher passes on
# and leaves the job running (docs/clusters.md, "MPICH and Open MPI")
#SBATCH --signal=B:USR1@120
# a requeued job keeps its id, script and arguments, so it reruns the same command and resumes
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=mpicolor-%j.log
set -euo pipefail
usage="usage: sbatch run/slurm.sh INPUT_DIR OUTPUT_DIR"
INPUT="${1:?$usage}"
OUTPUT="${2:?$usage}"
SPLIT="${SPLIT:-14:4}"
# at most this much work is lost when a node dies; the time limit costs none (the signal above)
CHECKPOINT_EVERY="${CHECKPOINT_EVERY:-300}"
# a run that keeps being interrupted without finishing stops requeueing after this many restarts
MAX_REQUEUES="${MAX_REQUEUES:-20}"
# pmix for an MPI built against Slurm's PMIx (the usual site MPI); pmi2 for some MPICH builds
SRUN_MPI="${SRUN_MPI:-pmix}"

# --kill-on-bad-exit: one failed rank ends the job (exit 70) instead of leaving the others waiting
srun --mpi="$SRUN_MPI" --kill-on-bad-exit=1 \
    mpicolor run "$INPUT" "$OUTPUT" --split "$SPLIT" --checkpoint-every "$CHECKPOINT_EVERY" &
launcher=$!
warned=0
# in the background, so that bash runs this trap at once instead of after srun ends
trap 'warned=1; kill -USR1 "$launcher" 2>/dev/null || true' USR1
status=0
wait "$launcher" || status=$?
while kill -0 "$launcher" 2>/dev/null; do  # the trap cut the wait short: rank 0 is still checkpointing
    status=0
    wait "$launcher" || status=$?
done

# srun may report the ranks it killed after rank 0's abort (137) rather than rank 0's 4
if [ "$status" -eq 4 ] || { [ "$warned" -eq 1 ] && [ "$status" -ne 0 ]; }; then
    if [ "${SLURM_RESTART_COUNT:-0}" -lt "$MAX_REQUEUES" ]; then
        echo "run/slurm.sh: interrupted after a checkpoint; requeueing job $SLURM_JOB_ID to resume" >&2
        scontrol requeue "$SLURM_JOB_ID"
    else
        echo "run/slurm.sh: interrupted after a checkpoint; not requeued after $MAX_REQUEUES restarts:" \
             "sbatch the same command again to resume" >&2
    fi
    exit 4
fi
exit "$status"
