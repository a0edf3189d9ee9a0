"""`mpicolor render`: the barcode's columns, failed and pending frames, modes, resampling, and the whole
pipeline pack -> run under mpiexec -> render on a video made here and on the shared real clip."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from helpers import SHARED_DATA, outputs, run_mpicolor
from mpicolor.tools import inspect, pack, render, results
from mpicolor.state.checkpoint import CHECKPOINT, CHECKPOINT_FOLDER, Checkpoint
from mpicolor.state.results import CPU, FAILED, GPU, PENDING, TarballResults
from mpicolor.state.sqlite import write_sqlite
from test_pack import command, make_video

CLIP = os.path.join(SHARED_DATA, "video", "car-detection.mp4")
SETTINGS = {"clusters": 3, "method": "fast", "seed": 0, "scale": 1, "max_pixels": 1000, "label": "db",
            "version": "test"}


def tarball_results(name, frames, packed, shares, backend, failures=None, status=None):
    """A :class:`TarballResults` with these rows; status from the backends unless given."""
    tarball = TarballResults.empty(name, frames, len(packed[0]))
    tarball.record(np.arange(len(frames)), np.array(packed, np.uint32), np.array(shares, np.float32),
                   np.array(backend, np.uint8), failures or {})
    tarball.settle()
    tarball.status = status or tarball.status
    return tarball


def synthetic_outputs(output_dir):
    """An OUTPUT_DIR written by the state modules themselves, without a run:

    ``b.tar`` complete: ``b/2.jpg`` (tar position 0) red over green, ``b/1.jpg`` blue, ``b/3.jpg`` failed;
    ``a.tar`` partial: ``a/1.jpg`` white/black half and half, ``a/2.jpg`` pending.
    In render order: a/1 (white/black), a/2 (pending), b/1 (blue), b/2 (red/green), b/3 (failed).
    """
    os.makedirs(output_dir, exist_ok=True)
    complete = tarball_results("b.tar", ["b/2.jpg", "b/1.jpg", "b/3.jpg"],
                               [[0xFF0000, 0x00FF00, 0], [0x0000FF, 0, 0], [0, 0, 0]],
                               [[0.75, 0.25, 0], [1, 0, 0], [0, 0, 0]], [CPU, GPU, FAILED],
                               {2: "not a JPEG"})
    partial = tarball_results("a.tar", ["a/1.jpg", "a/2.jpg"], [[0xFFFFFF, 0x000000, 0], [0, 0, 0]],
                              [[0.5, 0.5, 0], [0, 0, 0]], [CPU, PENDING])
    Checkpoint(str(output_dir)).save(SETTINGS, [complete, partial])
    write_sqlite(str(output_dir), "db", complete, SETTINGS)
    return output_dir


def read_png(path):
    """A PNG as RGBA, shape (height, width, 4)."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)


def test_stripes_put_the_dominant_colour_on_top_with_heights_by_share(tmp_path):
    output_dir = synthetic_outputs(tmp_path / "out")
    assert command(render, output_dir, "--out", tmp_path / "bar.png", "--height", 8) == 0
    image = read_png(tmp_path / "bar.png")
    assert image.shape == (8, 5, 4)
    np.testing.assert_array_equal(image[:, 0, :3], [[255] * 3] * 4 + [[0] * 3] * 4)
    np.testing.assert_array_equal(image[:, 2, :3], [[0, 0, 255]] * 8)
    np.testing.assert_array_equal(image[:, 3, :3], [[255, 0, 0]] * 6 + [[0, 255, 0]] * 2)
    assert (image[..., 3][:, [0, 2, 3, 4]] == 255).all()


def test_a_failed_frame_is_a_grey_hatch_and_a_pending_one_transparent(tmp_path):
    output_dir = synthetic_outputs(tmp_path / "out")
    assert command(render, output_dir, "--out", tmp_path / "bar.png", "--height", 16) == 0
    image = read_png(tmp_path / "bar.png")
    failed = image[:, 4]
    assert set(map(tuple, failed[:, :3].tolist())) == {(0x60,) * 3, (0xA0,) * 3}
    assert (failed[:, 0] == failed[:, 1]).all() and len(np.flatnonzero(np.diff(failed[:, 0].astype(int)))) >= 3
    assert (image[:, 1, 3] == 0).all()


def test_dominant_mode_fills_the_column(tmp_path):
    output_dir = synthetic_outputs(tmp_path / "out")
    assert command(render, output_dir, "--out", tmp_path / "bar.png", "--height", 4, "--mode", "dominant") == 0
    image = read_png(tmp_path / "bar.png")
    np.testing.assert_array_equal(image[:, 3, :3], [[255, 0, 0]] * 4)
    np.testing.assert_array_equal(image[:, 0, :3], [[255, 255, 255]] * 4)


def test_average_mode_averages_in_linear_light(tmp_path):
    output_dir = synthetic_outputs(tmp_path / "out")
    assert command(render, output_dir, "--out", tmp_path / "bar.png", "--height", 2, "--mode", "average") == 0
    image = read_png(tmp_path / "bar.png")
    # half white, half black is 50 % linear light, sRGB 188; a gamma-encoded mean would give 128
    np.testing.assert_array_equal(image[0, 0, :3], [188, 188, 188])
    # 75 % red and 25 % green: sRGB(0.75) = 225, sRGB(0.25) = 137
    np.testing.assert_array_equal(image[0, 3, :3], [225, 137, 0])


def test_width_resamples_and_average_mode_averages_each_columns_frames():
    packed = np.array([[0xFFFFFF], [0], [0xFF0000], [0xFF0000]], np.uint32)
    frames = render.FrameSequence([f"t.tar:{n}" for n in range(4)], packed, np.ones((4, 1), np.float32),
                                  np.full(4, render.COLOURS, np.uint8), {})
    image = render.draw(render.make_barcode(frames, 2, 1, "average"))
    np.testing.assert_array_equal(image[0, :, :3], [[188, 188, 188], [255, 0, 0]])
    image = render.draw(render.make_barcode(frames, 8, 1, "dominant"))
    np.testing.assert_array_equal(image[0, ::2, :3], [[255, 255, 255], [0, 0, 0], [255, 0, 0], [255, 0, 0]])
    assert render.make_barcode(frames, 2, 1, "stripes").frame.tolist() == [0, 2]


def whole_sequence_averages(frames, width):
    """Each column's mean in linear light as render computed it before it streamed: prefix sums over the whole
    sequence at once. Returns the encoded sRGB (width, 3) and whether each column has a computed frame."""
    first, stop = render.column_ranges(len(frames.names), width)
    shares = frames.shares.astype(np.float64)
    totals = shares.sum(axis=1, keepdims=True)
    linear = render.srgb_to_linear(render.unpack(frames.packed) / 255.0)
    usable = (frames.kind == render.COLOURS) & (totals[:, 0] > 0)
    per_frame = np.einsum("nk,nkc->nc", shares / np.where(totals > 0, totals, 1.0), linear) * usable[:, None]
    sums = np.concatenate([np.zeros((1, 3)), np.cumsum(per_frame, axis=0)])
    counts = np.concatenate([[0], np.cumsum(usable)])
    count = counts[stop] - counts[first]
    average = (sums[stop] - sums[first]) / np.maximum(count, 1)[:, None]
    return np.rint(render.linear_to_srgb(average) * 255).astype(np.uint8), count > 0


def block(frames, start, stop):
    """Frames ``[start, stop)`` of a sequence, as the next block a tarball gives."""
    return render.FrameSequence(frames.names[start:stop], frames.packed[start:stop], frames.shares[start:stop],
                                frames.kind[start:stop], {index - start: reason for index, reason in
                                                          frames.reasons.items() if start <= index < stop})


@pytest.mark.parametrize("width", [1, 7, 333, 5000, 6000])
def test_blocks_give_the_whole_sequences_barcode_bit_for_bit(width):
    rng = np.random.default_rng(width)
    n_frames = 5000
    shares = -np.sort(-rng.dirichlet(np.ones(3), n_frames).astype(np.float32), axis=1)
    kind = rng.choice([render.COLOURS, render.FAILED, render.PENDING], n_frames, p=[0.8, 0.1, 0.1]).astype(np.uint8)
    frames = render.FrameSequence([f"t.tar:{n:05d}" for n in range(n_frames)],
                                  rng.integers(0, 1 << 24, (n_frames, 3)).astype(np.uint32), shares, kind,
                                  {int(n): f"reason {n}" for n in np.flatnonzero(kind == render.FAILED)})
    edges = [0, *sorted(rng.choice(np.arange(1, n_frames), 6, replace=False).tolist()), n_frames]
    for mode in render.MODES:
        builder = render.BarcodeBuilder(n_frames, width, 20, mode, 3)
        for start, stop in zip(edges[:-1], edges[1:]):
            builder.add(block(frames, start, stop), start)
        barcode = builder.barcode()
        middle = barcode.frame
        np.testing.assert_array_equal(barcode.packed, frames.packed[middle])
        assert barcode.names[:, 1].tolist() == [frames.names[frame] for frame in middle.tolist()]
        assert barcode.names[:, 2].tolist() == [frames.names[frame - 1] for frame in barcode.stop.tolist()]
        assert barcode.reasons == {column: frames.reasons[frame] for column, frame in enumerate(middle.tolist())
                                   if frame in frames.reasons}
        if mode == "average":
            encoded, computed = whole_sequence_averages(frames, width)
            np.testing.assert_array_equal(barcode.colors[:, 0], encoded)
            np.testing.assert_array_equal(barcode.kind, np.where(computed, render.COLOURS, kind[middle]))
        else:
            np.testing.assert_array_equal(barcode.kind, kind[middle])


def test_the_sqlite_files_give_the_same_picture_as_the_checkpoint(tmp_path):
    output_dir = synthetic_outputs(tmp_path / "out")
    assert command(render, output_dir, "--out", tmp_path / "a.png", "--tarball", "b.tar") == 0
    os.remove(output_dir / CHECKPOINT)
    shutil.rmtree(output_dir / CHECKPOINT_FOLDER)
    with results.OutputReader(str(output_dir)) as reader:
        assert reader.source == results.SOURCE_SQLITE
    assert command(render, output_dir, "--out", tmp_path / "b.png", "--tarball", "b.tar") == 0
    np.testing.assert_array_equal(read_png(tmp_path / "a.png"), read_png(tmp_path / "b.png"))


def test_svg_names_each_frame_and_its_colours_on_hover(tmp_path):
    output_dir = synthetic_outputs(tmp_path / "out")
    assert command(render, output_dir, "--out", tmp_path / "bar.svg") == 0
    text = (tmp_path / "bar.svg").read_text()
    assert "<title>b.tar:b/2.jpg\n#ff0000 75%\n#00ff00 25%</title>" in text
    assert "<title>b.tar:b/3.jpg\nfailed: not a JPEG</title>" in text
    assert "<title>a.tar:a/2.jpg\nnot computed yet</title>" in text


@pytest.mark.parametrize("flags, message", [
    (["--tarball", "c.tar"], "tarball 'c.tar' is not in"),
    (["--height", "0"], "--height 0 should be >= 1"),
    (["--out", "bar.jpg"], "should end in .png or .svg"),
])
def test_bad_requests_are_refused(tmp_path, capsys, flags, message):
    output_dir = synthetic_outputs(tmp_path / "out")
    assert command(render, output_dir, "--out", tmp_path / "bar.png", *flags) == 2
    assert message in capsys.readouterr().err


def sqlite_dominants(output_dir):
    """color0 of every computed frame, by tarball name then member name, from the sqlite files."""
    dominants = []
    for name, tables in sorted(outputs(output_dir).items()):
        dominants += [row[1] for row in sorted(tables["images"], key=lambda row: (row[0], row[-1]))]
    return dominants


def assert_columns_carry_the_dominant_colours(png, output_dir):
    """Column i's top pixel is frame i's dominant colour in the sqlite files."""
    image = read_png(png)
    expected = render.unpack(sqlite_dominants(output_dir))
    assert image.shape[1] == len(expected)
    np.testing.assert_array_equal(image[0, :, :3], expected)


@pytest.mark.mpi
def test_pack_run_render_a_video_made_here(tmp_path):
    make_video(tmp_path / "tiny.avi")
    assert command(pack, tmp_path / "tiny.avi", "--out", tmp_path / "tars", "--frames-per-tar", 10) == 0
    finished = run_mpicolor(2, "run", tmp_path / "tars", tmp_path / "out")
    assert finished.returncode == 0, finished.stderr
    assert command(render, tmp_path / "out", "--out", tmp_path / "bar.png", "--height", 20) == 0
    assert_columns_carry_the_dominant_colours(tmp_path / "bar.png", tmp_path / "out")


@pytest.mark.mpi
@pytest.mark.skipif(not os.path.exists(CLIP), reason=f"the shared real clip {CLIP} is absent")
def test_pack_run_render_inspect_the_real_clip(tmp_path, capsys):
    assert command(pack, CLIP, "--out", tmp_path / "tars", "--fps", 2, "--frames-per-tar", 25) == 0
    assert sorted(os.listdir(tmp_path / "tars")) == [f"car-detection-000{part}.tar" for part in range(3)]
    finished = run_mpicolor(2, "run", tmp_path / "tars", tmp_path / "out")
    assert finished.returncode == 0, finished.stderr
    assert command(render, tmp_path / "out", "--out", tmp_path / "bar.png", "--height", 60) == 0
    assert_columns_carry_the_dominant_colours(tmp_path / "bar.png", tmp_path / "out")
    capsys.readouterr()
    assert command(inspect, tmp_path / "out", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    tables = outputs(tmp_path / "out")
    sqlite_names = [f"hist_car-detection-000{part}.tar_db.sqlite" for part in range(3)]
    assert [(t["name"], t["status"], t["frames"], t["failed"], t["sqlite"]) for t in report["tarballs"]] == [
        (f"car-detection-000{part}.tar", "complete", len(tables[sqlite]["images"]), 0, sqlite)
        for part, sqlite in enumerate(sqlite_names)]
    # 30.16 s sampled at 2 per second
    assert report["totals"]["computed"] == 61 and report["last_run"]["frames"] == 61
