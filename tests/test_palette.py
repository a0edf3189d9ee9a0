"""extract_palette and palette_from_bytes: API, gold answers, degenerate frames, determinism, quality."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
import simplejpeg

from mpicolor.engine import gpu, jit, palette, stages
from mpicolor.engine.decode import decode_frame, repeated_chroma
from mpicolor.engine.kernels import chroma, histogram, kmeans, search, warm_up
from mpicolor.engine.palette import METHODS, BadFrame, default_scale, extract_palette, palette_from_bytes, smooth_chroma

# in the portable subset, which run/power-check.sh runs on ppc64le under emulation
pytestmark = pytest.mark.portable

FRAMES = pathlib.Path(__file__).parent / "data" / "frames"
REPO = pathlib.Path(__file__).parents[1]


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Compile (or load) the numba kernels once for the whole session."""
    warm_up()


def frame_bytes(name):
    return (FRAMES / name).read_bytes()


def blocks(colours_bgr, widths, height=10):
    """An image of flat vertical blocks of the given BGR colours and widths."""
    return np.concatenate([np.full((height, width, 3), colour, np.uint8)
                           for colour, width in zip(colours_bgr, widths)], axis=1)


def inertia(image, palette):
    return kmeans.palette_inertia(image.reshape(-1, 3), palette.rgb[:, ::-1].astype(np.float64))


@pytest.mark.parametrize("method", METHODS)
def test_palette_shapes_dtypes_sorting_packing(method):
    image = cv2.resize(decode_frame(frame_bytes("car_005.jpg")), (80, 45), interpolation=cv2.INTER_AREA)
    palette = extract_palette(image, clusters=4, method=method)
    assert palette.rgb.shape == (4, 3) and palette.rgb.dtype == np.uint8
    assert palette.shares.shape == (4,) and palette.shares.dtype == np.float64
    assert palette.shares.sum() == pytest.approx(1.0)
    assert np.all(np.diff(palette.shares) <= 0)
    rgb = palette.rgb.astype(np.int64)
    np.testing.assert_array_equal(palette.packed, rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert palette.packed.dtype == np.int64 and np.all(palette.packed < 2**24)


def test_palette_is_frozen():
    palette = extract_palette(blocks([(0, 0, 255), (255, 0, 0)], [3, 1]), clusters=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        palette.rgb = None
    with pytest.raises(ValueError, match="read-only"):
        palette.shares[0] = 0.5


@pytest.mark.parametrize("method", METHODS)
def test_gold_three_flat_blocks(method):
    # BGR blocks: pure red (50%), green-ish (30%), grey (20%).
    image = blocks([(0, 0, 255), (10, 200, 30), (90, 90, 90)], [25, 15, 10])
    palette = extract_palette(image, clusters=3, method=method)
    np.testing.assert_array_equal(palette.rgb, [[255, 0, 0], [30, 200, 10], [90, 90, 90]])
    np.testing.assert_allclose(palette.shares, [0.5, 0.3, 0.2])
    assert palette.packed.tolist() == [0xFF0000, 30 << 16 | 200 << 8 | 10, 0x5A5A5A]


def test_equal_shares_ordered_by_packed_colour():
    image = blocks([(200, 0, 0), (0, 0, 200)], [5, 5])
    palette = extract_palette(image, clusters=2)
    assert palette.packed.tolist() == [200, 200 << 16]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("image", [np.zeros((30, 40, 3), np.uint8), np.full((1, 1, 3), 77, np.uint8)],
                         ids=["all-black", "1x1"])
def test_degenerate_frames_fill_spare_rows(method, image):
    with pytest.warns(Warning):
        palette = extract_palette(image, clusters=5, method=method)
    assert palette.rgb.shape == (5, 3)
    assert not np.isnan(palette.shares).any() and palette.shares.sum() == pytest.approx(1.0)
    assert palette.shares[0] == 1.0
    np.testing.assert_array_equal(palette.rgb, np.repeat(image[:1, 0, ::-1], 5, axis=0))


def test_fewer_colours_than_clusters_repeat_last_real_colour_with_share_0():
    # The smaller block comes first in the image, so it is the last colour only once sorted.
    image = blocks([(0, 0, 255), (255, 0, 0)], [1, 3])
    with pytest.warns(UserWarning, match="2 distinct colours, fewer than clusters=4"):
        palette = extract_palette(image, clusters=4)
    np.testing.assert_array_equal(palette.rgb, [[0, 0, 255], [255, 0, 0], [255, 0, 0], [255, 0, 0]])
    np.testing.assert_array_equal(palette.shares, [0.75, 0.25, 0.0, 0.0])


@pytest.mark.parametrize("keywords, message", [
    ({"clusters": 0}, "clusters=0 should be an int >= 1"),
    ({"clusters": 2.5}, "clusters=2.5 should be an int >= 1"),
    ({"method": "foo"}, "method='foo' should be one of 'fast', 'seed'"),
    ({"seed": -1}, r"seed=-1 should be an int in \[0, 2\*\*32\)"),
])
def test_argument_errors_name_value_and_rule(keywords, message):
    with pytest.raises(ValueError, match=message):
        extract_palette(np.zeros((2, 2, 3), np.uint8), **keywords)


@pytest.mark.parametrize("image, described", [
    (np.zeros((4, 4, 3), np.float64), r"float64 array of shape \(4, 4, 3\)"),
    (np.zeros((4, 4), np.uint8), r"uint8 array of shape \(4, 4\)"),
    (np.zeros((0, 4, 3), np.uint8), r"uint8 array of shape \(0, 4, 3\)"),
    ([[1, 2, 3]], "list"),
])
def test_image_errors(image, described):
    with pytest.raises(ValueError, match="image should be a non-empty uint8 array of shape "
                                         r"\(height, width, 3\), got " + described):
        extract_palette(image)


def test_same_result_twice():
    image = decode_frame(frame_bytes("person_005.jpg"))
    assert extract_palette(image) == extract_palette(image)


def test_same_result_in_another_process_with_other_threads_and_hash_seed():
    name = "bottle_010.jpg"
    script = ("import json, pathlib, sys; from mpicolor.engine.palette import palette_from_bytes; "
              f"p = palette_from_bytes(pathlib.Path({str(FRAMES / name)!r}).read_bytes()); "
              "print(json.dumps([p.packed.tolist(), p.shares.tolist()]))")
    environment = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONHASHSEED="12345", OMP_NUM_THREADS="2")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=120, check=True)
    packed, shares = json.loads(result.stdout)
    palette = palette_from_bytes(frame_bytes(name))
    assert packed == palette.packed.tolist()
    assert shares == palette.shares.tolist()


@pytest.mark.parametrize("scale", [None, 2])
def test_palette_from_bytes_is_extract_of_decode(scale):
    data = frame_bytes("car_010.jpg")
    effective = default_scale("fast") if scale is None else scale
    expected = extract_palette(decode_frame(data, scale=effective, smooth_chroma=smooth_chroma("fast")), 5, "fast", 3,
                               repeated_chroma(data, effective, smooth_chroma("fast")))
    assert palette_from_bytes(data, 5, "fast", 3, scale=scale) == expected


def test_repeated_chroma_names_the_block_the_fast_decode_repeats():
    image = decode_frame(frame_bytes("car_010.jpg"))
    for subsampling, block in (("420", (2, 2)), ("422", (1, 2)), ("444", (1, 1))):
        data = simplejpeg.encode_jpeg(np.ascontiguousarray(image), 90, "BGR", subsampling)
        assert repeated_chroma(data, 1, False) == block
        assert repeated_chroma(data, 1, True) == (1, 1)  # interpolated: every pixel has its own
        assert repeated_chroma(data, 2, False) == (1, 1)  # a reduced decode: not rebuilt
    assert repeated_chroma(cv2.imencode(".png", image)[1].tobytes(), 1, False) == (1, 1)


def test_interpolated_chroma_rebuilt_from_the_fast_decode_is_near_the_originals():
    # the sampled pixels whose interpolated chroma moves a channel by half a level or more (those the comparison reads
    # again), rebuilt from the fast decode's repeated chroma, against OpenCV's decode: less than a quarter of the
    # fast decode's squared error over the bundled frames (measured: a seventh; on the greyest frames, where the
    # chroma read back from rounded pixels is noise of half a level, about as far as the fast decode)
    fast_error = rebuilt_error = 0.0
    for path in sorted(FRAMES.glob("*.jpg")):
        data = path.read_bytes()
        fast, original = decode_frame(data, smooth_chroma=False), decode_frame(data).astype(np.float64)
        height, width = fast.shape[:2]
        pixel = np.empty(3)
        for index in palette.sample_indices(height, width)[::3]:
            y, x = divmod(int(index), width)
            d_cb, d_cr = chroma.chroma_shift(fast, y, x, 2, 2)
            if max(abs(1.772 * d_cb), abs(0.344136 * d_cb + 0.714136 * d_cr), abs(1.402 * d_cr)) < 0.5:
                continue
            chroma.smoothed_pixel(fast, y, x, 2, 2, pixel)
            rebuilt_error += ((pixel - original[y, x]) ** 2).sum()
            fast_error += ((fast[y, x] - original[y, x]) ** 2).sum()
    assert rebuilt_error < fast_error / 4


def test_unsettled_finalists_compared_on_interpolated_chroma_only_when_it_was_repeated():
    assert stages.chroma_decides(2, 2, 2) and stages.chroma_decides(2, 1, 2)
    assert not stages.chroma_decides(1, 2, 2)  # settled: one finalist
    assert not stages.chroma_decides(2, 1, 1)  # every pixel has its own chroma
    inertias = np.array([100.0, 101.0])  # the first leads by 1
    margin = stages.FAST.chroma_margin
    assert not stages.chroma_could_decide(inertias, inertias + [0.0, -0.9 * margin], stages.FAST)
    assert stages.chroma_could_decide(inertias, inertias + [0.0, -1.1 * margin], stages.FAST)
    assert stages.chroma_could_decide(inertias[::-1].copy(), inertias[::-1] + [-1.1 * margin, 0.0], stages.FAST)
    assert not stages.chroma_could_decide(inertias, inertias + [0.0, 5.0], stages.FAST)  # the lead only grows
    data = frame_bytes("car_010.jpg")
    image = decode_frame(data, smooth_chroma=False)
    assert extract_palette(image, 5, "fast", 0, (1, 1)) == extract_palette(image)
    with pytest.raises(ValueError, match=r"chroma_block=\(2,\) should be \(rows, columns\), each 1 or 2"):
        extract_palette(image, chroma_block=(2,))


def test_seed_decodes_as_the_original_and_fast_repeats_chroma():
    assert smooth_chroma("seed") is True and smooth_chroma("fast") is False
    with pytest.raises(ValueError, match="method='x' should be one of"):
        smooth_chroma("x")


def test_palette_from_bytes_refuses_bad_frames():
    with pytest.raises(BadFrame, match="empty"):
        palette_from_bytes(b"")
    with pytest.raises(BadFrame, match="above max_pixels=1,000"):
        palette_from_bytes(frame_bytes("car_010.jpg"), max_pixels=1000)


def test_default_scale():
    assert default_scale("seed") == 1
    assert default_scale("fast") in (1, 2, 4, 8)
    with pytest.raises(ValueError, match="method='x' should be one of"):
        default_scale("x")


@pytest.mark.parametrize("name", ["bottle_005.jpg", "car_005.jpg", "person_005.jpg"])
def test_fast_quality_close_to_seed_on_real_frames(name):
    # Half size keeps the scikit-learn reference quick; both see the same pixels.
    image = decode_frame(frame_bytes(name), scale=2)
    fast = extract_palette(image, method="fast")
    seed = extract_palette(image, method="seed")
    assert inertia(image, fast) <= inertia(image, seed) * 1.003


def test_numba_cache_folder_is_the_users_when_the_package_is_read_only(monkeypatch):
    home = {"HOME": "/home/someone"}
    monkeypatch.setattr(os.path, "expanduser", lambda path: path.replace("~", home["HOME"]))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only install
    assert jit.cache_dir({}) == "/home/someone/.cache/mpicolor/numba"
    assert jit.cache_dir({"XDG_CACHE_HOME": "/xdg"}) == "/xdg/mpicolor/numba"
    assert jit.cache_dir({"NUMBA_CACHE_DIR": "/chosen"}) is None  # the user's choice stands
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    assert jit.cache_dir({}) is None  # numba's own __pycache__ beside the modules


def test_numba_takes_the_cache_folder_before_any_kernel_is_compiled(tmp_path):
    # os.access stands in for a read-only install: as root, chmod would not stop writes. numba imported first, as
    # `mpicolor info` does, must still see the folder.
    script = ("import os; os.access = lambda path, mode: False; import numba; import mpicolor.engine.kernels; "
              "print(numba.config.CACHE_DIR)")
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    environment["HOME"] = str(tmp_path)
    printed = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=environment,
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert printed == str(tmp_path / ".cache" / "mpicolor" / "numba")
    environment["NUMBA_CACHE_DIR"] = str(tmp_path / "chosen")
    printed = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=environment,
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert printed == str(tmp_path / "chosen")


# --- the fast method's parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(1080, 1920), (360, 640), (576, 768), (97, 55), (1, 1), (3, 2000)])
def test_sample_is_a_jittered_grid_of_about_one_pixel_in_eight(height, width):
    rows, offsets, column_step, size = palette.sample_rows(height, width)
    pixels = height * width
    fast = stages.FAST
    assert min(pixels, fast.sample_min) <= size <= fast.sample_max
    if fast.sample_min <= pixels // fast.sample_fraction <= fast.sample_max:
        assert pixels / size == pytest.approx(fast.sample_fraction, rel=0.1)
    assert np.all((0 <= rows) & (rows < height)) and np.all(np.diff(rows) > 0)
    assert np.all((0 <= offsets) & (offsets < column_step))
    indices = palette.sample_indices(height, width)
    assert indices.size == size == np.unique(indices).size
    row_step = -(-height // rows.size)
    if row_step > 1 and rows.size > 20:
        # every band of rows gives one, not always the same of the band, from varying columns
        assert np.unique(rows % row_step).size > 1 and np.unique(offsets).size > 1


def adaptive_levels(image, thresholds):
    """The levels of `histogram.sample_levels` of an image's whole sample, and the sample."""
    pixels = image.reshape(-1, 3).astype(np.int32)
    ups = (1, 2, 3)
    coarser = np.zeros((histogram.coarser_rows(6, ups), 4), np.int32)
    codes = np.empty(len(pixels), np.int32)
    occupied, bins, _ = histogram.sample_bins(image, 6, np.arange(image.shape[0]), np.zeros(image.shape[0], np.int64),
                                              1, np.zeros((1 << 18, 4), np.int32), ups, coarser, codes)
    np.testing.assert_array_equal(codes >> 6, histogram.colour_bins(pixels, 6))
    low_bits = ((pixels[:, 0] & 3) << 4) | ((pixels[:, 1] & 3) << 2) | (pixels[:, 2] & 3)
    np.testing.assert_array_equal(codes & 63, low_bits)
    points, weights, moments, sizes = histogram.sample_levels(
        codes, bins, occupied, 6, ups, coarser, np.array(thresholds, np.float64), np.zeros(1 << 18, np.int32),
        np.zeros(coarser.shape[0], np.uint8))
    return [(points[k, :, :size], weights[k, :size], moments[k, :, :size]) for k, size in enumerate(sizes)], pixels


def test_adaptive_levels_keep_every_pixel_and_follow_the_threshold():
    image = decode_frame(frame_bytes("person_005.jpg"), scale=4)
    levels, pixels = adaptive_levels(image, (1e12, 1e4))
    for points, weights, moments in levels:
        assert weights.sum() == len(pixels)
        np.testing.assert_array_equal(moments.sum(axis=1), pixels.sum(axis=0))
        np.testing.assert_array_equal(points, moments / weights)
    (coarse, _, _), (fine, _, _) = levels
    assert coarse.shape[1] <= 512 < fine.shape[1]  # 3-bit bins at most, then finer where heavy
    ((exact, weights, _),), _ = adaptive_levels(image, (0.0,))
    distinct, counts = np.unique(pixels, axis=0, return_counts=True)
    order = np.lexsort(exact[::-1])
    np.testing.assert_array_equal(exact.T[order], distinct)
    np.testing.assert_array_equal(weights[order], counts)


def gold_lloyd(points, weights, centres, max_iter, tol):
    """Weighted Lloyd as `kmeans.lloyd` documents it, in plain NumPy, sums taken afresh every iteration."""
    centres = centres.copy()
    previous = None
    for _ in range(max_iter):
        distances = ((points.T[:, None, :] - centres[None]) ** 2).sum(-1)
        labels = distances.argmin(1)
        if previous is not None and np.array_equal(labels, previous):
            break
        previous = labels
        updated = centres.copy()
        for j in range(len(centres)):
            mass = weights[labels == j].sum()
            if mass > 0:
                updated[j] = (points * weights)[:, labels == j].sum(1) / mass
        assert all(weights[labels == j].sum() > 0 for j in range(len(centres)))  # no empty cluster here
        shift = ((updated - centres) ** 2).sum()
        centres = updated
        if shift <= tol:
            break
    labels = ((points.T[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return centres, labels


def test_lloyd_is_the_gold_answer_though_it_updates_only_the_points_that_move():
    rng = np.random.default_rng(5)
    points = rng.integers(0, 256, (3, 400)).astype(np.float64)
    weights = rng.integers(1, 30, 400).astype(np.float64)
    start = points[:, :4].T.copy()
    for max_iter, tol in ((300, 0.0), (3, 0.0), (300, 5.0)):
        runs = start[None].copy()
        labels, inertia = kmeans.lloyd_runs(points, weights, points * weights, runs, max_iter, tol)
        centres, labels, inertia = runs[0], labels[0], inertia[0]
        gold_centres, gold_labels = gold_lloyd(points, weights, start, max_iter, tol)
        np.testing.assert_allclose(centres, gold_centres, rtol=1e-12)
        np.testing.assert_array_equal(labels, gold_labels)
        assert inertia == pytest.approx((weights * ((points.T - centres[labels]) ** 2).sum(1)).sum())


def test_lane_sum_adds_in_four_running_sums():
    rng = np.random.default_rng(2)
    for n in (0, 1, 6, 101):
        weights, values = rng.random(n), rng.random(n)
        lanes = [0.0] * 4
        for i in range(n):
            lanes[i % 4] += weights[i] * values[i]
        assert kmeans.lane_sum(weights, values) == (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])


def test_distinct_runs_keeps_the_best_of_each_configuration():
    base = np.array([[0.0, 0, 0], [100, 100, 100], [200, 0, 0]])
    runs = np.stack([base + 1, base, base + [[0, 0, 0], [0, 0, 0], [0, 90, 0]], base + 2, base * 0.5])
    inertia = np.array([5.0, 3.0, 4.0, 6.0, 3.0])
    # lowest first, the first of equal inertias first, one per configuration (runs 1, 0 and 3 are within 6 levels)
    assert search.distinct_runs(runs, inertia, 6.0, 4).tolist() == [1, 4, 2]
    assert search.distinct_runs(runs, inertia, 6.0, 1).tolist() == [1]
    assert search.distinct_runs(runs, inertia, 0.5, 5).tolist() == [1, 4, 2, 0, 3]


class CountingKMeans(gpu.BatchedKMeans):
    """The array k-means on NumPy, counting the restarts and the Lloyd iterations it is asked for."""

    restarted = 0
    converged = []

    def restarts(self, tasks, max_iter):
        CountingKMeans.restarted += sum(len(uniforms) for _, uniforms, _ in tasks)
        return super().restarts(tasks, max_iter)

    def converge(self, tasks, max_iter):
        CountingKMeans.converged.append((len(tasks), max_iter))
        return super().converge(tasks, max_iter)


def test_restarts_then_distinct_configurations_are_ranked_on_the_final_level(monkeypatch):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (60, 200, 3), dtype=np.uint8)  # no clusters: many configurations
    monkeypatch.setattr(gpu, "BatchedKMeans", CountingKMeans)
    # the stages of `solve_plans`, which the CPU's one-call search (`search.fast_search`) takes too
    assert gpu.extract_palettes([noise], xp=np) == [extract_palette(noise)]
    fast = stages.FAST
    assert CountingKMeans.restarted == fast.restarts
    (first_keep, first_iterations), (_, second_iterations) = fast.ranking
    # the ranking's steps, then the winner, or both finalists of an unsettled frame, on the final or finer level
    assert CountingKMeans.converged[:2] == [(fast.scored, first_iterations), (first_keep, second_iterations)]
    assert CountingKMeans.converged[2:] in ([(1, fast.final_iter)], [(2, fast.final_iter)])


def gold_settled(points, weights, first, second, settings):
    """`stages.settled` in plain NumPy: the standard error of the finalists' mean difference, relative to the
    first's inertia, against the bar, and the difference against it."""
    points = points.astype(np.float64).T
    nearest_first = ((points[:, None, :] - first[None]) ** 2).sum(-1).min(1)
    nearest_second = ((points[:, None, :] - second[None]) ** 2).sum(-1).min(1)
    differences = nearest_second - nearest_first
    total = weights.sum()
    inertia = (weights * nearest_first).sum() / total
    mean = (weights * differences).sum() / total
    error = np.sqrt((weights * (differences - mean) ** 2).sum() / total / total) / inertia
    return not (error > settings.unsettled_error and mean / inertia < settings.unsettled_gap * error)


def test_finalists_are_settled_when_the_sample_tells_them_apart():
    rng = np.random.default_rng(4)
    # two well separated groups of colours: the finalists differ by a colour far from the points (settled), or by
    # one that moves a little (the sample cannot tell which is better: unsettled when few pixels carry it)
    points = np.concatenate([rng.normal(60, 6, (3, 200)), rng.normal(190, 6, (3, 200))], axis=1).astype(np.float32)
    good = np.array([[60.0, 60, 60], [190, 190, 190]])
    for second, weights, expected in ((np.array([[60.0, 60, 60], [250, 250, 250]]), np.ones(400), True),
                                      (good + 0.3, np.ones(400), False),
                                      (good + 0.3, np.full(400, 1e4), True)):
        fast = stages.FAST
        assert stages.settled(points, weights, good, second, fast) == gold_settled(points, weights, good, second,
                                                                                    fast) == expected
    assert stages.settled(points[:, :1], np.ones(1), points[:, :1].T.astype(np.float64), good, stages.FAST)


def test_unsettled_frames_take_the_finer_level_in_both_engines(monkeypatch):
    finalists = []

    class RecordingKMeans(gpu.BatchedKMeans):
        def converge(self, tasks, max_iter):
            if max_iter == stages.FAST.final_iter:
                finalists.append(len(tasks))
            return super().converge(tasks, max_iter)

    monkeypatch.setattr(gpu, "BatchedKMeans", RecordingKMeans)
    images = [decode_frame(path.read_bytes()) for path in sorted(FRAMES.glob("*.jpg"))]
    for image in images:
        assert gpu.extract_palettes([image], xp=np) == [extract_palette(image)]
    # the bundled frames hold both: settled ones (one finalist converges) and unsettled ones (both, on the finer level)
    assert set(finalists) == {1, 2}
