"""`mpicolor inspect` and `mpicolor export`: they agree with the sqlite files, and show partial, failed and
unreadable tarballs for what they are."""

import csv
import io
import json
import os
import shutil

import pytest

from helpers import outputs, pack_scenes, run_mpicolor
from mpicolor import export, inspect, render, store
from test_pack import command
from test_render import SETTINGS, synthetic_outputs, tarball_results


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    """OUTPUT_DIR of a real run with 2 ranks on the bundled frames (bottle.tar, car.tar, person.tar); read only."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "input").mkdir()
    pack_scenes(str(folder / "input"))
    finished = run_mpicolor(2, "run", folder / "input", folder / "out")
    assert finished.returncode == 0, finished.stderr
    return folder / "out"


def printed(capsys, module, *argv):
    """What ``mpicolor <module> argv...`` writes on stdout; asserts exit status 0."""
    capsys.readouterr()
    assert command(module, *argv) == 0
    return capsys.readouterr().out


def json_lines(text):
    """The objects of a JSON Lines text, one per line."""
    return [json.loads(line) for line in text.splitlines()]


def expected_colours(tables):
    """``{(tarball, member): ([hex, ...], [share, ...])}`` from the sqlite files' images tables."""
    found = {}
    for tables_of_one in tables.values():
        tarball = dict(tables_of_one["info"])["tarball"]
        for row in tables_of_one["images"]:
            clusters = (len(row) - 2) // 2
            hexes = [render.hex_colour(colour) for colour in render.unpack(row[1:1 + clusters])]
            found[tarball, row[-1]] = (hexes, list(row[1 + clusters:1 + 2 * clusters]))
    return found


def test_inspect_json_agrees_with_the_sqlite_files(run_output, capsys):
    report = json.loads(printed(capsys, inspect, run_output, "--json"))
    tables = outputs(run_output)
    assert report["source"] == "checkpoint"
    assert report["settings"]["clusters"] == 5 and report["settings"]["label"] == "db"
    for tarball in report["tarballs"]:
        sqlite = tables[tarball["sqlite"]]
        assert tarball["status"] == "complete"
        assert tarball["computed"] == len(sqlite["images"]) and tarball["pending"] == 0
        assert [(f["imgname"], f["reason"], f["member"]) for f in tarball["failures"]] == sqlite["failures"]
        assert tarball["frames"] == len(sqlite["images"]) + len(sqlite["failures"])
        assert sum(tarball["backends"].values()) == tarball["computed"]
    assert report["totals"]["complete"] == len(tables) == 3
    assert report["last_run"]["frames"] == report["totals"]["computed"] == 12
    text = printed(capsys, inspect, run_output)
    assert "tarballs: 3 (3 complete, 0 partial, 0 incomplete, 0 unreadable)" in text and "frames/s" in text


def test_export_csv_and_json_agree_with_the_sqlite_files(run_output, capsys, tmp_path):
    expected = expected_colours(outputs(run_output))
    assert command(export, run_output, "--format", "csv", "--out", tmp_path / "all.csv") == 0
    with open(tmp_path / "all.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["tarball"], int(row["member"])) for row in rows] == sorted(expected)
    for row in rows:
        hexes, shares = expected[row["tarball"], int(row["member"])]
        assert [row[f"color{k}_hex"] for k in range(5)] == hexes
        assert [float(row[f"share{k}"]) for k in range(5)] == pytest.approx(shares, abs=1e-6)
        assert row["color0_hex"] == "#%02x%02x%02x" % tuple(int(row[f"color0_{c}"]) for c in "rgb")
    frames = json_lines(printed(capsys, export, run_output, "--format", "json"))
    for frame in frames:
        hexes, shares = expected[frame["tarball"], frame["member"]]
        assert [colour["hex"] for colour in frame["colors"]] == hexes
        assert [colour["share"] for colour in frame["colors"]] == pytest.approx(shares, abs=1e-6)
        assert [render.hex_colour(colour["rgb"]) for colour in frame["colors"]] == hexes
    assert len(frames) == len(expected)


def test_partial_failed_and_unreadable_tarballs_are_shown(tmp_path, capsys):
    output_dir = synthetic_outputs(tmp_path / "out")
    unreadable = store.TarballResults.unreadable("c.tar", "not a tar archive", 3)
    cut = tarball_results("d.tar", ["d/1.jpg"], [[0x123456, 0, 0]], [[1, 0, 0]], [store.CPU],
                          status=store.INCOMPLETE)
    cut.incomplete = "the archive ends inside d/2.jpg"
    store.Checkpoint(str(output_dir)).save(SETTINGS, [unreadable, cut])
    report = json.loads(printed(capsys, inspect, output_dir, "--json"))
    statuses = {t["name"]: (t["status"], t["computed"], t["failed"], t["pending"]) for t in report["tarballs"]}
    assert statuses == {"a.tar": ("partial", 1, 0, 1), "b.tar": ("complete", 2, 1, 0),
                        "c.tar": ("unreadable", 0, 0, 0), "d.tar": ("incomplete", 1, 0, 0)}
    assert report["tarballs"][1]["failures"] == [{"member": 2, "imgname": "b/3.jpg", "reason": "not a JPEG"}]
    assert report["totals"]["backends"] == {"cpu": 3, "gpu": 1} and report["last_run"] is None
    text = printed(capsys, inspect, output_dir)
    assert "failed #2 b/3.jpg: not a JPEG" in text and "(not a tar archive)" in text
    assert "(the archive ends inside d/2.jpg)" in text
    frames = json_lines(printed(capsys, export, output_dir, "--format", "json"))
    assert [(f["tarball"], f["imgname"], f["status"], f["reason"]) for f in frames] == [
        ("a.tar", "a/1.jpg", "done", None), ("b.tar", "b/2.jpg", "done", None), ("b.tar", "b/1.jpg", "done", None),
        ("b.tar", "b/3.jpg", "failed", "not a JPEG"), ("d.tar", "d/1.jpg", "done", None)]
    rows = list(csv.reader(io.StringIO(printed(capsys, export, output_dir, "--format", "csv"))))
    assert rows[4][:5] == ["b.tar", "2", "b/3.jpg", "failed", "not a JPEG"] and set(rows[4][5:]) == {""}


def test_without_the_checkpoint_the_sqlite_files_are_read(run_output, capsys, tmp_path):
    with_checkpoint = json.loads(printed(capsys, inspect, run_output, "--json"))
    copied = tmp_path / "copied"
    copied.mkdir()
    for name in os.listdir(run_output):
        if name.endswith(".sqlite"):
            shutil.copy(run_output / name, copied / name)
    report = json.loads(printed(capsys, inspect, copied, "--json"))
    assert report["source"] == "sqlite"
    for key in ("name", "status", "frames", "computed", "failed", "failures", "sqlite"):
        assert [t[key] for t in report["tarballs"]] == [t[key] for t in with_checkpoint["tarballs"]], key
    assert report["totals"]["backends"] == {"unknown": 12}


def test_an_output_dir_without_results_is_refused(tmp_path, capsys):
    for module, flags in ((inspect, []), (export, ["--format", "csv"]), (render, ["--out", tmp_path / "x.png"])):
        assert command(module, tmp_path, *flags) == 3
        assert "holds neither checkpoint.h5 nor any hist_*.sqlite file" in capsys.readouterr().err

