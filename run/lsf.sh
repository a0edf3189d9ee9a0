#!/usr/bin/env bash
# mpicolor under LSF on IBM Power nodes (~160 hardware threads and 2 GPUs each):
#   INPUT=/path/to/frames OUTPUT=/path/to/colours bsub < run/lsf.sh
# LSF reads the #BSUB lines only from a script on standard input, so the settings come from the environment,
# which the job inherits (as it does the activated environment with mpicolor and the site's MPI).
# Resubmitting resumes from OUTPUT's checkpoint, and the job does that by itself: interrupted by the time
# limit after a checkpoint, it exits with status 4, which -Q below makes LSF requeue.
#BSUB -J mpicolor
#BSUB -nnodes 2
#BSUB -W 120
# gpumps: NVIDIA MPS, so that the many ranks sharing a GPU run on it together, not in turn; smt4: 4
# hardware threads per core (160 per node)
#BSUB -alloc_flags "gpumps smt4"
# SIGUSR1 2 minutes before the time limit: rank 0 writes a final checkpoint and the job exits with status 4.
# Not SIGTERM: Open MPI's mpirun answers that by killing every rank half a second later (docs/clusters.md)
#BSUB -wa USR1
#BSUB -wt 2
#BSUB -Q "4"
#BSUB -o mpicolor.%J.log
#BSUB -e mpicolor.%J.log
# Plain LSF without jsrun (LAUNCHER=mpirun): replace -nnodes and -alloc_flags above with
#   #BSUB -n 288
#   #BSUB -R "span[ptile=144]"
#   #BSUB -gpu "num=2:mode=shared:mps=yes"
set -euo pipefail
usage="usage: INPUT=/path/to/frames OUTPUT=/path/to/colours bsub < run/lsf.sh"
INPUT="${INPUT:?$usage}"
OUTPUT="${OUTPUT:?$usage}"
# the same as #BSUB -nnodes
NODES="${NODES:-2}"
# a multiple of C+G = 18, so that every node gets the same 112 CPU and 32 GPU ranks (hostfiles/README.md)
RANKS_PER_NODE="${RANKS_PER_NODE:-144}"
CORES_PER_NODE="${CORES_PER_NODE:-40}"
GPUS_PER_NODE="${GPUS_PER_NODE:-2}"
SPLIT="${SPLIT:-14:4}"
# at most this much work is lost when a node dies; the time limit costs none (-wa/-wt above)
CHECKPOINT_EVERY="${CHECKPOINT_EVERY:-300}"
# jsrun (CSM LSF), or mpirun (Spectrum MPI or Open MPI under plain LSF)
LAUNCHER="${LAUNCHER:-jsrun}"

case "$LAUNCHER" in
    jsrun)
        # one resource set per node with all its cores and GPUs: jsrun numbers each resource set's GPUs from
        # 0 and mpicolor numbers devices per node; packed puts ranks 0..RANKS_PER_NODE-1 on the first
        launch=(jsrun --nrs "$NODES" --rs_per_host 1 --tasks_per_rs "$RANKS_PER_NODE"
                --cpu_per_rs "$CORES_PER_NODE" --gpu_per_rs "$GPUS_PER_NODE" --bind none
                --launch_distribution packed) ;;
    mpirun)
        # Open MPI refuses more ranks than cores without --oversubscribe; bound, they would share cores
        launch=(mpirun -np "$((NODES * RANKS_PER_NODE))" --map-by "ppr:$RANKS_PER_NODE:node" --oversubscribe
                --bind-to none) ;;
    *)
        echo "run/lsf.sh: LAUNCHER=$LAUNCHER should be jsrun or mpirun" >&2
        exit 2 ;;
esac

# LSF signals the whole job, the launcher too, which passes SIGUSR1 on to the ranks; this shell only has to
# survive it (a trapped signal waits for the foreground launcher to end) and see how the run ended
warned=0
trap 'warned=1' USR1
status=0
"${launch[@]}" mpicolor run "$INPUT" "$OUTPUT" --split "$SPLIT" --gpus "$GPUS_PER_NODE" \
    --checkpoint-every "$CHECKPOINT_EVERY" || status=$?

# the launcher may report the ranks it killed after rank 0's abort rather than rank 0's 4
if [ "$status" -eq 4 ] || { [ "$warned" -eq 1 ] && [ "$status" -ne 0 ]; }; then
    echo "run/lsf.sh: interrupted after a checkpoint; exiting with 4 so that LSF requeues the job" >&2
    exit 4
fi
exit "$status"
