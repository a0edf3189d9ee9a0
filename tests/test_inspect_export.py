"""`mpicolor inspect` and `mpicolor export`: they agree with the sqlite files, and show partial, failed and
unreadable tarballs for what they are; CSV and JSON Lines are exactly what `csv.writer` and `json.dumps`
write, and Parquet reads back row by row as the sqlite files."""

import csv
import io
import json
import os
import shutil
import sys
import time

import cv2
import h5py
import numpy as np
import pytest

from helpers import (
    SYNTHETIC_SETTINGS,
    bundled_frames,
    command,
    outputs,
    pack_scenes,
    pack_tarball,
    read_png,
    run_mpicolor,
    synthetic_outputs,
    tarball_results,
)
from mpicolor.job.exits import EXIT_INPUT_FAILED
from mpicolor.state.checkpoint import CHECKPOINT_FOLDER, Checkpoint, tarball_file_name
from mpicolor.state.results import CPU, INCOMPLETE, TarballResults
from mpicolor.tools import export, inspect, render, stored


def parquet():
    """pyarrow.parquet, or a skip: pyarrow is the ``parquet`` extra, which a distro install may lack."""
    return pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (pip install 'mpicolor[parquet]')")


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    """OUTPUT_DIR of a real run with 2 ranks on the bundled frames (bottle.tar, car.tar, person.tar); read only."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "input").mkdir()
    pack_scenes(str(folder / "input"))
    finished = run_mpicolor(2, "run", folder / "input", folder / "out")
    assert finished.returncode == 0, finished.stderr
    return folder / "out"


@pytest.fixture(scope="module")
def hostile_output(tmp_path_factory):
    """OUTPUT_DIR of a real 2-rank run on car.tar and odd.tar: names with commas, quotes, a line break,
    non-ASCII, a duplicate; a corrupt and a truncated frame (failures) and a flat frame (a note); read only."""
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "input").mkdir()
    pack_scenes(str(folder / "input"))
    for scene in ("bottle", "person"):
        os.remove(folder / "input" / f"{scene}.tar")
    frames = [open(path, "rb").read() for path in bundled_frames()]
    flat = cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8))[1].tobytes()
    pack_tarball(str(folder / "input" / "odd.tar"), [
        ("odd/b, comma.jpg", frames[0]), ('odd/a "quote".jpg', frames[1]), ("odd/c\nbreak.jpg", frames[2]),
        ("odd/dup.jpg", frames[3]), ("odd/dup.jpg", frames[4]), ("odd/\u00e9t\u00e9 \u96fb.jpg", frames[5]),
        ("odd/corrupt.jpg", b"not a jpeg"), ("odd/truncated.jpg", frames[6][:2000]), ("odd/flat.jpg", flat)])
    finished = run_mpicolor(2, "run", folder / "input", folder / "out")
    assert finished.returncode == 0, finished.stderr
    return folder / "out"


def sqlite_records(output_dir):
    """Every frame of the sqlite files as the export's records, tarballs in name order, frames in tar order:
    the export as it was written cell by cell before it streamed."""
    records = []
    for tables in outputs(output_dir).values():
        tarball = dict(tables["info"])["tarball"]
        clusters = (len(tables["images"][0]) - 2) // 2
        for row in tables["images"]:
            colours = [{"hex": render.hex_colour(rgb), "rgb": [int(value) for value in rgb], "share": round(share, 6)}
                       for rgb, share in zip(render.unpack(row[1:1 + clusters]), row[1 + clusters:-1])]
            records.append({"tarball": tarball, "member": row[-1], "imgname": row[0], "status": "done",
                            "reason": None, "colors": colours})
        records += [{"tarball": tarball, "member": member, "imgname": imgname, "status": "failed", "reason": reason,
                     "colors": []} for imgname, reason, member in tables["failures"]]
    return sorted(records, key=lambda record: (record["tarball"], record["member"]))


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


@pytest.mark.mpi
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


@pytest.mark.mpi
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
        assert row["color0_hex"] == "#" + "".join(f"{int(row[f'color0_{c}']):02x}" for c in "rgb")
    frames = json_lines(printed(capsys, export, run_output, "--format", "json"))
    for frame in frames:
        hexes, shares = expected[frame["tarball"], frame["member"]]
        assert [colour["hex"] for colour in frame["colors"]] == hexes
        assert [colour["share"] for colour in frame["colors"]] == pytest.approx(shares, abs=1e-6)
        assert [render.hex_colour(colour["rgb"]) for colour in frame["colors"]] == hexes
    assert len(frames) == len(expected)


def test_partial_failed_and_unreadable_tarballs_are_shown(tmp_path, capsys):
    output_dir = synthetic_outputs(tmp_path / "out")
    unreadable = TarballResults.unreadable("c.tar", "not a tar archive", 3)
    cut = tarball_results("d.tar", ["d/1.jpg"], [[0x123456, 0, 0]], [[1, 0, 0]], [CPU],
                          status=INCOMPLETE)
    cut.incomplete = "the archive ends inside d/2.jpg"
    Checkpoint(str(output_dir)).save(SYNTHETIC_SETTINGS, [unreadable, cut])
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


@pytest.mark.mpi
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


@pytest.mark.mpi
def test_csv_and_json_lines_are_what_csv_writer_and_json_dumps_write(hostile_output, capsys):
    records = sqlite_records(hostile_output)
    assert {record["status"] for record in records} == {"done", "failed"} and len(records) == 13
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["tarball", "member", "imgname", "status", "reason"]
                    + [f"{name}{k}" for k in range(5) for name in ("color", "color_r", "color_g", "color_b", "share")])
    for record in records:
        row = [record["tarball"], record["member"], record["imgname"], record["status"], record["reason"] or ""]
        for colour in record["colors"]:
            row += [colour["hex"], *colour["rgb"], colour["share"]]
        writer.writerow(row + [""] * (30 - len(row)))
    expected_rows = stream.getvalue().split("\n", 1)[1]
    exported = printed(capsys, export, hostile_output, "--format", "csv")
    assert exported.split("\n", 1)[1] == expected_rows
    assert exported.split("\n", 1)[0].split(",")[5:10] == ["color0_hex", "color0_r", "color0_g", "color0_b", "share0"]
    assert printed(capsys, export, hostile_output, "--format", "json") == "".join(
        json.dumps(record) + "\n" for record in records)


@pytest.mark.mpi
def test_parquet_reads_back_as_the_sqlite_files_row_by_row(hostile_output, tmp_path):
    assert command(export, hostile_output, "--format", "parquet", "--out", tmp_path / "frames.parquet") == 0
    table = parquet().read_table(tmp_path / "frames.parquet")
    assert table.schema.field("color0").type == "int32" and table.schema.field("color0_r").type == "int16"
    assert table.schema.field("share0").type == "float" and table.schema.field("member").type == "int64"
    rows = table.to_pylist()
    tables = outputs(hostile_output)
    expected = []
    for tables_of_one in tables.values():
        tarball = dict(tables_of_one["info"])["tarball"]
        expected += [(tarball, row[-1], ("done", row)) for row in tables_of_one["images"]]
        expected += [(tarball, member, ("failed", (imgname, reason))) for imgname, reason, member in
                     tables_of_one["failures"]]
    expected.sort(key=lambda item: item[:2])
    assert [(row["tarball"], row["member"]) for row in rows] == [item[:2] for item in expected]
    for row, (_, _, (status, sqlite_row)) in zip(rows, expected):
        assert row["status"] == status
        if status == "failed":
            assert (row["imgname"], row["reason"]) == sqlite_row
            assert all(row[f"color{k}{part}"] is None for k in range(5) for part in ("", "_r", "_g", "_b"))
            assert all(row[f"share{k}"] is None for k in range(5))
            continue
        assert row["imgname"] == sqlite_row[0] and row["reason"] is None
        for k in range(5):
            packed = sqlite_row[1 + k]
            assert row[f"color{k}"] == packed
            assert (row[f"color{k}_r"], row[f"color{k}_g"], row[f"color{k}_b"]) == tuple(render.unpack(packed))
            # sqlite keeps the float32 share as a double: back to float32 it is the same number
            assert np.float32(row[f"share{k}"]) == np.float32(sqlite_row[6 + k])
    about = json.loads(parquet().read_metadata(tmp_path / "frames.parquet").metadata[b"mpicolor"])
    assert about["settings"]["clusters"] == 5 and about["source"] == "checkpoint"
    assert about["tarballs"] == [{"name": "car.tar", "status": "complete"}, {"name": "odd.tar", "status": "complete"}]


def test_share_text_is_what_python_rounds_to(tmp_path):
    rng = np.random.default_rng(0)
    shares = np.concatenate([
        rng.random(20_000, np.float32), rng.random(2_000, np.float32) * 1e-4,
        np.float32([0, 1, 5e-7, 1e-6, 1.5e-6, 0.5, 0.25, 1e-4, 9.9999e-5, 0.9999995, 1 - 2 ** -24, 2.0, -0.25]),
        # exact ties between two six-decimal values (k / 128), and their float32 neighbours
        *(np.nextafter(np.float32(k / 128), np.float32([0, k / 128, 1])) for k in (1, 3, 5, 127))])
    texts = export._share_text(shares)
    assert [text.decode() for text in texts.tolist()] == [repr(round(float(share), 6)) for share in shares]


@pytest.mark.mpi
def test_inspect_and_export_take_tarball_names(run_output, capsys):
    report = json.loads(printed(capsys, inspect, run_output, "--json", "--tarball", "car.tar", "bottle.tar"))
    assert [tarball["name"] for tarball in report["tarballs"]] == ["bottle.tar", "car.tar"]
    assert report["totals"]["frames"] == 8
    rows = list(csv.reader(io.StringIO(printed(capsys, export, run_output, "--format", "csv", "--tarball",
                                               "person.tar"))))
    assert {row[0] for row in rows[1:]} == {"person.tar"} and len(rows) == 5
    for module, flags in ((inspect, []), (export, ["--format", "csv"])):
        assert command(module, run_output, *flags, "--tarball", "nope.tar") == 2
        assert "tarball 'nope.tar' is not in" in capsys.readouterr().err


def damage(output_dir, name):
    """Make one tarball of the checkpoint unreadable (its colours are gone), leaving the others intact."""
    with h5py.File(output_dir / CHECKPOINT_FOLDER / tarball_file_name(name), "r+") as h5:
        del h5["packed"]


def test_a_damaged_tarball_is_named_and_the_others_still_come_out(tmp_path, capsys):
    output_dir = synthetic_outputs(tmp_path / "out")
    damage(output_dir, "b.tar")
    capsys.readouterr()
    assert command(inspect, output_dir, "--json") == EXIT_INPUT_FAILED
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [tarball["name"] for tarball in report["tarballs"]] == ["a.tar"]
    assert "packed" in report["damaged"]["b.tar"] and "b.tar" in captured.err
    assert command(inspect, output_dir) == EXIT_INPUT_FAILED
    printed = capsys.readouterr().out
    assert "  b.tar: cannot be read (DamagedCheckpoint: " in printed and "'packed' doesn't exist" in printed
    assert command(export, output_dir, "--format", "csv") == EXIT_INPUT_FAILED
    assert [row[:2] for row in csv.reader(io.StringIO(capsys.readouterr().out))][1:] == [["a.tar", "0"]]
    assert command(render, output_dir, "--out", tmp_path / "bar.png") == EXIT_INPUT_FAILED
    assert read_png(tmp_path / "bar.png").shape[1] == 2  # a.tar's frames only


@pytest.mark.mpi
def test_parquet_needs_a_file_and_pyarrow(run_output, tmp_path, capsys, monkeypatch):
    assert command(export, run_output, "--format", "parquet") == 2
    assert "--format parquet needs --out FILE" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    assert command(export, run_output, "--format", "parquet", "--out", tmp_path / "x.parquet") == 2
    assert "pip install 'mpicolor[parquet]'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.parquet")


@pytest.mark.mpi
def test_tools_show_progress_as_tarballs_are_read(run_output, capsys):
    with stored.OutputReader(str(run_output)) as reader:
        for _ in stored.each_tarball(reader, reader.names, "bar"):
            time.sleep(0.6)  # the bar shows at most twice a second
    bar = capsys.readouterr().err
    assert "\r[" in bar and "data set 3/3, frames 12/12" in bar and bar.endswith("\n")
