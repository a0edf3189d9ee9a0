"""Compare the palettes of two demo runs (ppc64le against x86_64): python3 compare.py EXPECTED_DIR ACTUAL_DIR.

Prints, per output file, how many frames have exactly the same colours and shares, and for the others the
largest colour and share differences; exits 1 unless every frame is identical.
"""

import glob
import os
import sqlite3
import sys


def palettes(output_dir):
    """``{file name: {(member, imgname): (colours, shares)}}`` of every hist_*.sqlite in ``output_dir``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(output_dir, "hist_*.sqlite"))):
        connection = sqlite3.connect(path)
        try:
            columns = [row[1] for row in connection.execute("PRAGMA table_info(images)")]
            colours = [name for name in columns if name.startswith("color")]
            shares = [name for name in columns if name.startswith("share")]
            rows = connection.execute(f"SELECT member, imgname, {', '.join(colours + shares)} FROM images")
            found[os.path.basename(path)] = {(row[0], row[1]): (row[2:2 + len(colours)], row[2 + len(colours):])
                                             for row in rows}
        finally:
            connection.close()
    return found


def channel_difference(packed_a, packed_b):
    """The largest difference of one channel between two packed ``R << 16 | G << 8 | B`` colours."""
    return max(abs((packed_a >> shift & 255) - (packed_b >> shift & 255)) for shift in (16, 8, 0))


def main(expected_dir, actual_dir):
    expected, actual = palettes(expected_dir), palettes(actual_dir)
    if not expected or sorted(expected) != sorted(actual):
        print(f"output files differ: {sorted(expected)} against {sorted(actual)}")
        return 1
    all_identical = True
    for name in sorted(expected):
        frames_a, frames_b = expected[name], actual[name]
        if sorted(frames_a) != sorted(frames_b):
            print(f"{name}: the frames differ")
            all_identical = False
            continue
        differing = [key for key in frames_a if frames_a[key] != frames_b[key]]
        if not differing:
            print(f"{name}: {len(frames_a)} frames, colours and shares identical")
            continue
        all_identical = False
        colour_step = max(channel_difference(a, b) for key in differing
                          for a, b in zip(frames_a[key][0], frames_b[key][0]))
        share_step = max(abs(a - b) for key in differing for a, b in zip(frames_a[key][1], frames_b[key][1]))
        print(f"{name}: {len(differing)} of {len(frames_a)} frames differ (largest channel difference "
              f"{colour_step}, largest share difference {share_step:.3g}), e.g. {differing[0][1]}")
    return 0 if all_identical else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
