"""mpicolor bench kernel: options, tables, JSON, and errors that name the problem."""

import argparse
import json
import pathlib
import re
import tarfile

import cv2
import pytest

from mpicolor.bench import kernel as bench

FRAMES = pathlib.Path(__file__).parent / "data" / "frames"
REPO = pathlib.Path(__file__).parents[1]
HD_FRAMES = REPO.parent / "shared" / "data" / "frames" / "hd"


def run(argv):
    parser = argparse.ArgumentParser()
    bench.add_kernel_arguments(parser)
    return bench.run_kernel_bench(parser.parse_args(argv))


@pytest.fixture
def small_frames(tmp_path):
    """Two bundled frames at a tenth of their size, so the seed method stays quick."""
    for name in ("car_005.jpg", "bottle_005.jpg"):
        image = cv2.imread(str(FRAMES / name))
        small = cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(tmp_path / name), small)
    return tmp_path


def test_tables_and_json(small_frames, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert run(["--frames", str(small_frames), "--scale", "1", "2", "--repeat", "2",
                "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "numba kernels, first call" in printed
    for label in ("seed", "fast@scale1", "fast@scale2", "full decode alone", "x decode", "inertia/seed",
                  "by frame size", "<= 0.5 MP"):
        assert label in printed
    report = json.loads(report_path.read_text())
    summary = report["sources"][str(small_frames)]["summary"]
    assert summary["frames"] == 2 and summary["sizes"] == ["64x36"]
    fast = summary["variants"]["fast@scale1"]
    assert fast["speedup_over_seed"] > 1
    assert fast["inertia_ratio_median"] > 0 and fast["inertia_ratio_worst"] >= fast["inertia_ratio_median"]
    assert fast["over_decode_worst"] >= fast["over_decode_median"] > 0
    assert fast["over_decode_worst_frame"] in ("car_005.jpg", "bottle_005.jpg")
    assert summary["variants"]["seed"]["inertia_ratio_median"] == 1.0
    for frame in report["sources"][str(small_frames)]["frames"]:
        entry = frame["variants"]["fast@scale1"]
        assert entry["over_decode"] == pytest.approx(entry["total_ms"] / frame["fastest_decode_ms"])
    sd = report["size_classes"]["fast@scale1"]["<= 0.5 MP"]
    assert sd["frames"] == 2 and sd["target"] == 1.7 and sd["over_decode_median"] == fast["over_decode_median"]
    assert report["numba_first_call_s"] >= 0


def test_seed_inertia_from_an_earlier_report(small_frames, tmp_path, capsys):
    first = tmp_path / "first.json"
    assert run(["--frames", str(small_frames), "--repeat", "1", "--json", str(first)]) == 0
    second = tmp_path / "second.json"
    capsys.readouterr()
    assert run(["--frames", str(small_frames), "--repeat", "1", "--seed-from", str(first), "--json", str(second)]) == 0
    printed = capsys.readouterr().out
    assert f"seed's inertia per frame from {first} (seed not run)" in printed
    before, after = (json.loads(path.read_text())["sources"][str(small_frames)] for path in (first, second))
    assert "seed" not in after["summary"]["variants"]
    # the same frames, the same fast palettes: the same quality, without seed's 20 minutes on real sets
    for key in ("inertia_ratio_median", "inertia_ratio_worst", "inertia_ratio_worst_frame"):
        assert after["summary"]["variants"]["fast@scale1"][key] == before["summary"]["variants"]["fast@scale1"][key]


def test_tuning_and_validation_sources_are_reported_apart(small_frames, tmp_path, capsys):
    validation = tmp_path / "validation"
    validation.mkdir()
    image = cv2.imread(str(FRAMES / "person_005.jpg"))
    cv2.imwrite(str(validation / "person_005.jpg"), cv2.resize(image, (48, 27), interpolation=cv2.INTER_AREA))
    report_path = tmp_path / "report.json"
    assert run(["--frames", str(small_frames), "--validation", str(validation), "--repeat", "1",
                "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("by source, tuning and validation apart"):]
    rows = [line.split() for line in table.splitlines() if line.startswith("fast@scale1")]
    assert [row[1:4] for row in rows] == [["tuning", small_frames.name, "2"], ["validation", "validation", "1"]]
    report = json.loads(report_path.read_text())
    groups = report["groups"]["fast@scale1"]
    assert [row["source"] for row in groups["tuning"]] == [str(small_frames)]
    (row,) = groups["validation"]
    (frame,) = report["sources"][str(validation)]["frames"]
    ratio = frame["variants"]["fast@scale1"]["inertia_ratio"]
    assert row["frames"] == 1 and row["inertia_ratio_median"] == row["inertia_ratio_worst"] == ratio
    assert row["above_seed"] == int(ratio > 1.0)
    assert row["over_decode_median"] == frame["variants"]["fast@scale1"]["over_decode"]


def test_seed_from_refuses_a_report_without_the_frames(small_frames, tmp_path, capsys):
    first = tmp_path / "first.json"
    assert run(["--frames", str(small_frames), "--repeat", "1", "--methods", "fast", "--json", str(first)]) == 0
    capsys.readouterr()
    assert run(["--frames", str(small_frames), "--seed-from", str(first)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"mpicolor bench kernel: --seed-from {first}: no seed inertia for 2 of the frames")
    not_json = tmp_path / "notes.txt"
    not_json.write_text("seed inertias, somewhere")
    assert run(["--frames", str(small_frames), "--seed-from", str(not_json)]) == 2
    assert "not a JSON report of mpicolor bench kernel" in capsys.readouterr().err
    assert run(["--frames", str(small_frames), "--seed-from", str(tmp_path / "absent.json")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_tarballs_of_frames_are_sources_and_frame_sizes_are_classed(small_frames, tmp_path, capsys):
    # a tarball as `mpicolor pack` writes it, beside a folder of 1920x1080 frames
    tarball = tmp_path / "clip-0000.tar"
    with tarfile.open(tarball, "w") as archive:
        for path in sorted(small_frames.glob("*.jpg")):
            archive.add(path, arcname=f"clip/{path.name}")
    hd_folder = tmp_path / "hd"
    hd_folder.mkdir()
    image = cv2.resize(cv2.imread(str(FRAMES / "car_005.jpg")), (1920, 1080), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(hd_folder / "wide.jpg"), image)
    report_path = tmp_path / "report.json"
    assert run(["--frames", str(tarball), str(hd_folder), "--methods", "fast", "--repeat", "1",
                "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    frames = report["sources"][str(tarball)]["frames"]
    assert [frame["frame"] for frame in frames] == ["clip/bottle_005.jpg", "clip/car_005.jpg"]
    classes = report["size_classes"]["fast@scale1"]
    assert classes["<= 0.5 MP"]["frames"] == 2 and classes["1920x1080"]["frames"] == 1
    assert classes["1920x1080"]["target"] == 1.4
    assert classes["1920x1080"]["over_decode_worst_frame"] == "hd/wide.jpg"
    assert "clip-0000.tar: 2 frames (64x36)" in capsys.readouterr().out


def test_every_takes_every_nth_frame(small_frames, tmp_path):
    report_path = tmp_path / "report.json"
    assert run(["--frames", str(small_frames), "--every", "2", "--methods", "fast", "--repeat", "1",
                "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert [frame["frame"] for frame in report["sources"][str(small_frames)]["frames"]] == ["bottle_005.jpg"]


def test_fast_only_has_no_quality_columns(small_frames, capsys):
    assert run(["--frames", str(small_frames), "--methods", "fast", "--scale", "1", "--repeat", "1"]) == 0
    assert "fast@scale1" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--frames", "no/such/folder"], "frames source 'no/such/folder' not found"),
    (["--every", "0"], "--every 0 should be >= 1"),
    (["--methods", "fast,quick"], "method 'quick' should be one of fast, seed"),
    (["--scale", "3"], r"--scale 3 should be one of \(1, 2, 4, 8\)"),
    (["--repeat", "0"], "--repeat 0 should be >= 1"),
])
def test_errors_name_the_problem(argv, message, small_frames, capsys):
    if "--frames" not in argv:
        argv = argv + ["--frames", str(small_frames)]
    assert run(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_source_that_is_not_a_tarball_is_named(tmp_path, capsys):
    not_a_tar = tmp_path / "frames.tar"
    not_a_tar.write_bytes(b"not a tar archive" * 100)
    assert run(["--frames", str(not_a_tar)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mpicolor bench kernel: ") and str(not_a_tar) in error


def test_a_file_that_is_no_frame_is_left_out_and_named_and_a_source_of_none_is_refused(small_frames, capsys):
    # a .bmp counts as a frame in a tarball (the run records it as a failure); the benchmark leaves it out
    cv2.imwrite(str(small_frames / "z.bmp"), cv2.imread(str(small_frames / "car_005.jpg")))
    assert run(["--frames", str(small_frames), "--methods", "fast", "--repeat", "1"]) == 0
    captured = capsys.readouterr()
    assert "z.bmp left out, not a frame mpicolor decodes (not a JPEG or PNG image" in captured.err
    assert ": 2 frames (64x36)" in captured.out
    for name in ("car_005.jpg", "bottle_005.jpg"):
        (small_frames / name).unlink()
    assert run(["--frames", str(small_frames), "--methods", "fast"]) == 2
    assert f"no JPEG or PNG frames to time in {small_frames}" in capsys.readouterr().err


def test_default_folder_is_the_shared_hd_frames(monkeypatch, capsys):
    if not HD_FRAMES.is_dir():
        pytest.skip(f"real frames not present at {HD_FRAMES}")
    monkeypatch.chdir(REPO)
    assert run(["--methods", "fast", "--scale", "4", "--repeat", "1"]) == 0
    assert f"hd: {len(list(HD_FRAMES.glob('*.jpg')))} frames (1920x1080)" in capsys.readouterr().out


def test_backend_numpy_prints_the_same_table_and_a_batched_line(small_frames, tmp_path, capsys):
    # the GPU backend's code run by NumPy: the same table, the same palettes as the CPU kernels
    report_path = tmp_path / "report.json"
    assert run(["--frames", str(small_frames), "--methods", "fast", "--scale", "1", "--repeat", "1",
                "--backend", "numpy", "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "array kernels (numpy), first call" in printed and "fast@scale1" in printed
    assert "fast@scale1, all 2 frames in one call:" in printed
    array_report = json.loads(report_path.read_text())
    assert run(["--frames", str(small_frames), "--methods", "fast", "--scale", "1", "--repeat", "1",
                "--json", str(report_path)]) == 0
    cpu_report = json.loads(report_path.read_text())
    assert array_report["backend"] == "numpy" and cpu_report["backend"] == "cpu"
    packed = [[frame["variants"]["fast@scale1"]["packed"] for frame in report["sources"][str(small_frames)]["frames"]]
              for report in (array_report, cpu_report)]
    assert packed[0] == packed[1]


def test_backend_gpu_without_a_gpu_says_why(small_frames, capsys):
    from mpicolor.engine.devices import probe_gpus

    count, reason = probe_gpus()
    if count:
        pytest.skip("a usable GPU is present")
    assert run(["--frames", str(small_frames), "--backend", "gpu"]) == 2
    assert capsys.readouterr().err.strip() == f"mpicolor bench kernel: --backend gpu: {reason}"


def test_footage_frames_keep_the_aspect_and_the_conditions_their_size():
    from mpicolor.bench import footage

    image = cv2.imread(str(FRAMES / "car_005.jpg"))
    height, width = image.shape[:2]
    assert footage.to_size(image, 90, 90).shape == (90, 90, 3)
    # the crop keeps the centre: a 4:3 crop of a 16:9 frame drops equal strips left and right
    kept = height * 4 // 3
    centre = image[:, (width - kept) // 2:(width - kept) // 2 + kept]
    assert (footage.to_size(image, 120, 90) == cv2.resize(centre, (120, 90), interpolation=cv2.INTER_AREA)).all()
    pytest.importorskip("av", reason="the derived conditions are encoded with PyAV (pip install av)")
    frames = [footage.to_size(image, 320, 180), footage.to_size(image, 320, 180)[::-1].copy()]
    assert [frame.shape for frame in footage.web720(frames)] == [(720, 1280, 3)] * 2
    letterboxed = footage.grain_letterbox(frames, seed=1)
    assert letterboxed[0].shape == (1080, 1920, 3) and letterboxed[0][:120].max() < 40  # the bars stay black
    dark = footage.night(frames, seed=1)
    assert dark[0].mean() < frames[0].mean() / 2
    assert all((a == b).all() for a, b in zip(dark, footage.night(frames, seed=1)))  # the same noise every time
