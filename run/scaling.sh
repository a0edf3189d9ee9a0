#!/usr/bin/env bash
# The scaling benchmarks of docs/benchmarks.md, into bench-out/ (about 15 minutes on a 2-core machine):
#   bash run/scaling.sh
# 1. real runs: 1 rank against 2, and 2 ranks with one sharing its core with a CPU hog (bench run);
# 2. simulated strong scaling, 1 to 64 ranks at 20 ms per frame: the coordinator and the load balance,
#    not this machine's 2 cores, are what is measured;
# 3. the targets at 32 ranks: 0, 20 and 100 ms per frame, and rank 0's throughput at zero cost.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$repo"
out=bench-out
frames="${FRAMES:-../shared/data/frames/hd}"
footage="${FOOTAGE:-../shared/data/frames/footage}"
mkdir -p "$out"

if [ "${SKIP_RUN:-}" != 1 ]; then
    mpicolor bench run --frames "$frames" --out "$out/run" --json "$out/run.json" | tee "$out/run.txt"
fi

# small real frames, many of them: reading their bytes is cheap, so rank 0's work is what limits
python - "$footage" "$out/sim-input" <<'PY'
import sys
from mpicolor.bench.run import pack_frames
print(pack_frames(sys.argv[1], sys.argv[2], copies=41, tarballs=8), "frames packed for the simulated runs")
PY
mpicolor bench scaling "$out/sim-input" --ranks 1,2,4,8,16,32,64 --simulate 0.02 --out "$out/strong" \
    | tee "$out/strong.txt"
mpicolor bench scaling "$out/sim-input" --ranks 32 --simulate 0,0.02,0.1 --out "$out/targets" \
    | tee "$out/targets.txt"
# rank 0's throughput: 16 copies of the input (51,168 frames in 128 tarballs) at zero cost
mpicolor bench scaling "$out/sim-input" --ranks 2,8,32 --simulate 0 --copies 16 --out "$out/throughput" \
    | tee "$out/throughput.txt"
# weak scaling: 400 frames per rank (one tarball of the input)
mkdir -p "$out/weak-input" && ln -sf "$(cd "$out/sim-input" && pwd)"/set00.tar "$out/weak-input/"
mpicolor bench scaling "$out/weak-input" --ranks 1,2,4,8,16,32,64 --simulate 0.02 --weak --out "$out/weak" \
    | tee "$out/weak.txt"
