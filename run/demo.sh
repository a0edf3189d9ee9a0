#!/usr/bin/env bash
# The main job on the bundled real frames: bash run/demo.sh [RANKS]
# Packs tests/data/frames into three tarballs, runs `mpiexec -n RANKS mpicolor run`, prints the results and
# renders their barcode.
source "$(dirname "$0")/env.sh"
ranks="${1:-2}"
out="$repo/demo-out"
rm -rf "$out/input"
mkdir -p "$out/input"
(cd "$repo" && python - "$out/input") <<'PY'
import sys
sys.path.insert(0, "tests")
from helpers import pack_scenes
print("packed", ", ".join(pack_scenes(sys.argv[1])))
PY
mpiexec -n "$ranks" mpicolor run "$out/input" "$out/output" --checkpoint-every 10
python - "$out/output" <<'PY'
import glob, sqlite3, sys
for path in sorted(glob.glob(f"{sys.argv[1]}/hist_*.sqlite")):
    rows = sqlite3.connect(path).execute("SELECT imgname, color0, share0 FROM images ORDER BY member").fetchall()
    print(f"{path}: {len(rows)} frames")
    for name, color, share in rows:
        print(f"  {name:28s} dominant #{color:06x} ({share:.0%})")
PY
# 12 frames: each is drawn 40 columns wide, so that the picture can be seen
mpicolor render "$out/output" --out "$out/barcode.png" --height 120 --width 480
echo "the barcode of the demo run: $out/barcode.png"
