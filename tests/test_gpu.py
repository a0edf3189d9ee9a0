"""GPU ranks: the array kernel run by NumPy against the CPU kernel, batching, device errors, placement, fallback.

Everything but the device itself runs here: `mpicolor.engine.gpu` is the same code for NumPy and CuPy. The tests
that need CuPy and a device (or cuML) skip with the reason when there is none.
"""

import json
import logging
import os
import pathlib
import subprocess
import sys
import warnings
from collections import Counter

import cv2
import numpy as np
import pytest

from helpers import bundled_frames, pack_scenes, read_sqlite, run_mpicolor
from mpicolor.engine import gpu
from mpicolor.engine.decode import decode_frame, repeated_chroma
from mpicolor.engine.devices import probe_gpus
from mpicolor.engine.kernels import kmeans, warm_up
from mpicolor.engine.kernels.chroma import finalist_inertias
from mpicolor.engine.palette import extract_palette, sample_indices
from mpicolor.engine.stages import FAST
from mpicolor.job import worker
from mpicolor.job.config import RunConfig
from mpicolor.job.protocol import Chunk
from mpicolor.job.worker import FrameComputer
from mpicolor.state.results import CPU, GPU
from mpicolor.state.tarballs import index_tarball

HD_FRAMES = pathlib.Path(__file__).parents[2] / "shared" / "data" / "frames" / "hd"
VIDEOS = pathlib.Path(__file__).parents[2] / "shared" / "data" / "video"


@pytest.fixture(scope="module")
def frames():
    """The bundled real frames, decoded (640x360 footage of three scenes)."""
    warm_up()
    return [decode_frame(pathlib.Path(path).read_bytes()) for path in bundled_frames()]


def cpu_palettes(images, clusters=5, seed=0):
    return [extract_palette(image, clusters, "fast", seed) for image in images]


@pytest.mark.parametrize("seed", [0, 7])
def test_numpy_array_kernel_gives_the_cpu_palettes_on_real_frames(frames, seed):
    assert gpu.extract_palettes(frames, seed=seed, xp=np) == cpu_palettes(frames, seed=seed)


def test_numpy_array_kernel_gives_the_cpu_palettes_on_hd_frames():
    if not HD_FRAMES.is_dir():
        pytest.skip(f"HD frames not present at {HD_FRAMES}")
    images = [decode_frame(path.read_bytes()) for path in sorted(HD_FRAMES.glob("*.jpg"))]
    assert gpu.extract_palettes(images, xp=np) == cpu_palettes(images)


def test_numpy_array_kernel_gives_the_cpu_palettes_on_video_frames():
    # animated film and street footage: dark frames whose heavy bins split to exact colours
    images = []
    for name in ("Megamind.avi", "vtest.avi"):
        path = VIDEOS / name
        if not path.is_file():
            pytest.skip(f"video not present at {path}")
        capture = cv2.VideoCapture(str(path))
        for index in range(30, 180, 30):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            read, image = capture.read()
            assert read, f"{path}: frame {index}"
            images.append(image)
        capture.release()
    assert gpu.extract_palettes(images, xp=np) == cpu_palettes(images)


def test_numpy_array_kernel_gives_the_cpu_palettes_with_repeated_chroma(monkeypatch):
    # the run's own decode (chroma repeated over 2x2 blocks): unsettled frames compare their finalists on the sample
    # with interpolated chroma, on the host's frame, as the CPU does
    encoded = [pathlib.Path(path).read_bytes() for path in bundled_frames()]
    videos = [VIDEOS / name for name in ("Megamind.avi", "vtest.avi") if (VIDEOS / name).is_file()]
    for path in videos:
        capture = cv2.VideoCapture(str(path))
        for index in range(20, 260, 20):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            read, image = capture.read()
            assert read, f"{path}: frame {index}"
            encoded.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        capture.release()
    images = [decode_frame(data, smooth_chroma=False) for data in encoded]
    blocks = [repeated_chroma(data, 1, False) for data in encoded]
    assert set(blocks) == {(2, 2)}
    compared = []
    monkeypatch.setattr(gpu, "finalist_inertias",
                        lambda *arguments: compared.append(arguments[7]) or finalist_inertias(*arguments))
    assert gpu.extract_palettes(images, xp=np, chroma_blocks=blocks) == [
        extract_palette(image, 5, "fast", 0, block) for image, block in zip(images, blocks)]
    assert any(len(inertias) > 1 for inertias in compared), "no unsettled frame"
    with pytest.raises(ValueError, match="chroma_blocks has 1 entries for 2 images"):
        gpu.extract_palettes(images[:2], xp=np, chroma_blocks=blocks[:1])
    with pytest.raises(ValueError, match=r"chroma_block=\(3, 1\) should be \(rows, columns\), each 1 or 2"):
        gpu.extract_palettes(images[:1], xp=np, chroma_blocks=[(3, 1)])


def test_flat_busy_and_tiny_frames_in_one_batch_and_other_cluster_counts(frames):
    # busy (many fine bins), flat, a resized frame, a two-colour frame and 1x1 of different sizes together
    two_colours = np.zeros((9, 7, 3), np.uint8)
    two_colours[:, 3:] = (10, 200, 30)
    batch = [frames[0], cv2.resize(frames[5], (97, 55), interpolation=cv2.INTER_AREA), two_colours,
             np.full((1, 1, 3), 77, np.uint8), frames[9]]
    for clusters in (1, 3, 8):
        with warnings.catch_warnings(record=True) as array_warnings:
            warnings.simplefilter("always")
            palettes = gpu.extract_palettes(batch, clusters=clusters, seed=3, xp=np)
        with warnings.catch_warnings(record=True) as cpu_warnings:
            warnings.simplefilter("always")
            expected = cpu_palettes(batch, clusters, seed=3)
        assert palettes == expected
        # fewer distinct colours than clusters: the same warning, frame for frame
        assert [str(w.message) for w in array_warnings] == [str(w.message) for w in cpu_warnings]
        assert len(cpu_warnings) == {1: 0, 3: 2, 8: 2}[clusters]


def test_batches_cut_by_the_memory_budget_give_the_same_answer(frames):
    small = gpu.fast_colours(frames[:4], 5, 0, np, batch_bytes=1)  # one run per batch
    whole = gpu.fast_colours(frames[:4], 5, 0, np)
    for (small_bgr, small_counts), (bgr, counts) in zip(small, whole):
        np.testing.assert_array_equal(small_bgr, bgr)
        np.testing.assert_array_equal(small_counts, counts)


@pytest.mark.parametrize("keywords, message", [
    ({"clusters": 0}, "clusters=0 should be an int >= 1"),
    ({"seed": -1}, r"seed=-1 should be an int in \[0, 2\*\*32\)"),
])
def test_argument_errors_are_those_of_extract_palette(frames, keywords, message):
    with pytest.raises(ValueError, match=message):
        gpu.extract_palettes(frames[:1], xp=np, **keywords)
    with pytest.raises(ValueError, match="image should be a non-empty uint8 array"):
        gpu.extract_palettes([frames[0], np.zeros((2, 2), np.uint8)], xp=np)


def test_no_cupy_is_imported_until_a_gpu_is_asked_for():
    # a CPU-only install never touches CUDA: importing every module, or running on the CPU, loads no CuPy
    code = ("import sys; import mpicolor.engine.gpu, mpicolor.job.worker, mpicolor.bench.kernel, mpicolor.tools.info, "
            "mpicolor.cli; "
            "import numpy as np; mpicolor.engine.gpu.extract_palettes([np.zeros((4, 4, 3), np.uint8)], 2, xp=np); "
            "print(sorted(name for name in sys.modules if name.startswith(('cupy', 'cuml'))))")
    found = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                           timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


def test_without_a_usable_gpu_asking_for_one_says_why():
    count, reason = probe_gpus()
    if count:
        pytest.skip("a usable GPU is present")
    with pytest.raises(gpu.GpuUnavailable, match="CuPy is not installed|CUDA|no CUDA device") as raised:
        gpu.extract_palettes([np.zeros((4, 4, 3), np.uint8)])
    assert str(raised.value) == reason
    with pytest.raises(gpu.GpuUnavailable):
        gpu.GpuDevice(device=0)


def test_memory_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv("MPICOLOR_GPU_MEMORY", raising=False)
    assert gpu.memory_limit() == gpu.DEFAULT_MEMORY_LIMIT
    monkeypatch.setenv("MPICOLOR_GPU_MEMORY", str(1 << 28))
    assert gpu.memory_limit() == 1 << 28
    monkeypatch.setenv("MPICOLOR_GPU_MEMORY", "2G")
    with pytest.raises(ValueError, match="MPICOLOR_GPU_MEMORY='2G' should be a number of bytes"):
        gpu.memory_limit()


# --- a GPU rank's FrameComputer, its device played by NumPy -------------------------------------------


@pytest.fixture
def chunk(tmp_path):
    """All frames of the bundled 'car' scene as one chunk."""
    pack_scenes(str(tmp_path))
    path = str(tmp_path / "car.tar")
    members = index_tarball(path).members
    return Chunk(0, 0, path, np.arange(len(members)), np.array([m.offset for m in members]),
                 np.array([m.size for m in members]))


class DeviceError(RuntimeError):
    """Stands for a CUDA error class."""


# what a failing device raises unless told otherwise
ILLEGAL_ACCESS = DeviceError("an illegal memory access was encountered")


class FakeDevice(gpu.GpuDevice):
    """A NumPy backend whose "device" fails batches of several frames (``fail_batches``), the calls numbered
    in ``fail_calls`` (from 1), or every call (``fail_all``), with ``error``; ``calls`` records the frames of
    every call and ``held`` their device bytes."""

    def __init__(self, method="fast", fail_batches=False, fail_calls=(), fail_all=False, memory=None,
                 error=ILLEGAL_ACCESS):
        super().__init__(method=method, xp=np, memory=memory)
        self.fail_batches, self.fail_calls, self.fail_all, self.error = fail_batches, fail_calls, fail_all, error
        self.calls, self.held = [], []

    def colours(self, images, clusters, seed, chroma_blocks=None):
        self.calls.append(len(images))
        self.held.append(sum(self.frame_bytes(image) for image in images))
        if self.fail_all or (self.fail_batches and len(images) > 1) or len(self.calls) in self.fail_calls:
            raise self.error
        return super().colours(images, clusters, seed, chroma_blocks)


def config(tmp_path, **settings):
    return RunConfig(str(tmp_path), str(tmp_path / "out"), **settings)


def test_gpu_rank_computes_a_chunk_in_one_batch_with_the_cpu_answer(tmp_path, chunk):
    expected = FrameComputer(config(tmp_path)).compute(chunk)
    device = FakeDevice()
    result = FrameComputer(config(tmp_path), "gpu", gpu=device).compute(chunk)
    assert device.calls == [len(chunk.positions)]
    np.testing.assert_array_equal(result.packed, expected.packed)
    np.testing.assert_array_equal(result.shares, expected.shares)
    assert (result.backend == GPU).all() and (expected.backend == CPU).all()
    assert result.failures == {} and result.notes == expected.notes


def test_seed_on_a_numpy_backend_is_scikit_learns(tmp_path, chunk):
    first = Chunk(0, 0, chunk.path, chunk.positions[:1], chunk.offsets[:1], chunk.sizes[:1])
    expected = FrameComputer(config(tmp_path, method="seed")).compute(first)
    result = FrameComputer(config(tmp_path, method="seed"), "gpu", gpu=FakeDevice("seed")).compute(first)
    np.testing.assert_array_equal(result.packed, expected.packed)
    assert (result.backend == GPU).all()


def test_device_error_on_a_batch_retries_its_frames_one_by_one(tmp_path, chunk, caplog):
    expected = FrameComputer(config(tmp_path)).compute(chunk)
    device = FakeDevice(fail_batches=True)
    with caplog.at_level(logging.WARNING, logger="mpicolor.job.worker"):
        result = FrameComputer(config(tmp_path), "gpu", gpu=device).compute(chunk)
    assert device.calls == [4, 1, 1, 1, 1]
    np.testing.assert_array_equal(result.packed, expected.packed)
    assert (result.backend == GPU).all() and result.notes == {}
    assert "GPU error on a batch of 4 frames (DeviceError: an illegal memory access was encountered)" in caplog.text


def test_frame_the_device_fails_twice_is_computed_on_the_cpu_with_a_note(tmp_path, chunk):
    expected = FrameComputer(config(tmp_path)).compute(chunk)
    computer = FrameComputer(config(tmp_path), "gpu", gpu=FakeDevice(fail_batches=True, fail_calls=(2,)))
    result = computer.compute(chunk)  # call 1: the batch; call 2: the first frame alone
    np.testing.assert_array_equal(result.packed, expected.packed)
    np.testing.assert_array_equal(result.shares, expected.shares)
    assert result.backend.tolist() == [CPU] + [GPU] * (len(chunk.positions) - 1)
    assert result.notes == {0: "GPU error (DeviceError: an illegal memory access was encountered); "
                               "computed on the CPU"}
    assert computer.gpu is not None  # one failure does not cost the device


def test_a_device_that_keeps_failing_is_given_up_once(tmp_path, chunk, caplog):
    expected = FrameComputer(config(tmp_path)).compute(chunk)
    computer = FrameComputer(config(tmp_path), "gpu", gpu=FakeDevice(fail_all=True))
    with caplog.at_level(logging.WARNING, logger="mpicolor.job.worker"):
        first, second = computer.compute(chunk), computer.compute(chunk)
    for result in (first, second):
        np.testing.assert_array_equal(result.packed, expected.packed)
        assert (result.backend == CPU).all()
    assert sorted(first.notes) == list(range(worker.MAX_GPU_FAILURES)) and second.notes == {}
    assert caplog.text.count("this rank computes on the CPU from now on") == 1


def test_any_error_of_the_device_path_computes_on_the_cpu_with_a_note(tmp_path, chunk):
    # not a CUDA error class: a cuML or CuPy exception, or a bug of the device's path
    expected = FrameComputer(config(tmp_path)).compute(chunk)
    device = FakeDevice(fail_all=True, error=TypeError("cuML: unsupported input type"))
    result = FrameComputer(config(tmp_path), "gpu", gpu=device).compute(chunk)
    np.testing.assert_array_equal(result.packed, expected.packed)
    np.testing.assert_array_equal(result.shares, expected.shares)
    assert (result.backend == CPU).all() and result.failures == {}
    assert result.notes[0] == "GPU error (TypeError: cuML: unsupported input type); computed on the CPU"


def test_an_error_opening_the_device_computes_on_the_cpu(tmp_path, chunk, caplog, monkeypatch):
    def failing_backend(*args, **kwargs):
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    monkeypatch.setattr(gpu, "GpuDevice", failing_backend)
    expected = FrameComputer(config(tmp_path)).compute(chunk)
    with caplog.at_level(logging.WARNING, logger="mpicolor.job.worker"):
        result = FrameComputer(config(tmp_path), "gpu", device=0).compute(chunk)
    np.testing.assert_array_equal(result.packed, expected.packed)
    assert (result.backend == CPU).all()
    assert "GPU rank computing on the CPU: RuntimeError: cudaErrorInsufficientDriver" in caplog.text


def test_a_gpu_batch_is_bounded_by_the_memory_limit_not_by_the_chunk(tmp_path, chunk):
    expected = FrameComputer(config(tmp_path)).compute(chunk)
    car_frame = next(path for path in bundled_frames() if "car_" in path)
    frame = decode_frame(pathlib.Path(car_frame).read_bytes())
    # room for two of the chunk's frames (all 768x432) in a batch: the chunk of four takes two batches
    device = FakeDevice(memory=4 * gpu.GpuDevice.frame_bytes(frame))
    result = FrameComputer(config(tmp_path), "gpu", gpu=device).compute(chunk)
    assert device.calls == [2, 2] and max(device.held) <= device.batch_budget
    np.testing.assert_array_equal(result.packed, expected.packed)
    np.testing.assert_array_equal(result.shares, expected.shares)
    assert (result.backend == GPU).all()


def test_frame_bytes_count_the_row_sample_that_goes_to_the_device():
    # what a frame holds on the device follows its row sample, which stops growing with the frame
    shapes = ((48, 64, 3), (1080, 1920, 3), (4320, 7680, 3))
    sampled = [len(sample_indices(*shape[:2])) for shape in shapes]
    held = [gpu.GpuDevice.frame_bytes(np.zeros(shape, np.uint8)) for shape in shapes]
    # in proportion to the sampled pixels, the same bytes for each whatever the frame
    assert len({bytes_held / pixels for bytes_held, pixels in zip(held, sampled)}) == 1
    # and no further: 8K has 16 times the pixels of 1080p, and its sample stays under the cap
    assert sampled[0] < sampled[1] <= sampled[2] <= FAST.sample_max
    assert held[2] < 1.1 * held[1]
    assert gpu.GpuDevice(xp=np, memory=1 << 30).batch_budget == 1 << 29


def test_gpu_rank_without_a_gpu_computes_on_the_cpu_and_says_so_once(tmp_path, chunk, caplog):
    if probe_gpus()[0]:
        pytest.skip("a usable GPU is present")
    expected = FrameComputer(config(tmp_path)).compute(chunk)
    computer = FrameComputer(config(tmp_path), "gpu", device=0)
    with caplog.at_level(logging.WARNING, logger="mpicolor.job.worker"):
        results = [computer.compute(chunk) for _ in range(2)]
    for result in results:
        np.testing.assert_array_equal(result.packed, expected.packed)
        assert (result.backend == CPU).all()
    assert caplog.text.count("GPU rank computing on the CPU") == 1


# --- under mpiexec ----------------------------------------------------------------------------------------


@pytest.mark.mpi
def test_info_places_36_ranks_on_6_gpus_using_every_device():
    # one node, two cycles of 14:4: the GPU ranks are 0-3 and 18-21, 8 of them for 6 devices
    finished = run_mpicolor(36, "info", "--json", "--split", "14:4", "--gpus", "6", timeout=180)
    assert finished.returncode == 0, finished.stderr
    document = json.loads(finished.stdout)  # rank 0 alone prints, one document
    ranks = sorted(document["ranks"], key=lambda report: report["rank"])
    assert [report["rank"] for report in ranks] == list(range(36))
    assert [report["local_rank"] for report in ranks] == list(range(36))
    assert [report["role"] for report in ranks] == ["gpu" if rank % 18 < 4 else "cpu" for rank in range(36)]
    gpu_ranks = [report for report in ranks if report["role"] == "gpu"]
    cpu_ranks = [report for report in ranks if report["role"] == "cpu"]
    devices = Counter(report["device"] for report in gpu_ranks)
    assert sorted(devices) == list(range(6)), f"every device gets GPU ranks: {devices}"
    assert max(devices.values()) - min(devices.values()) <= 1, f"evenly, within one: {devices}"
    assert all(report["device"] is None and report["fallback"] is None for report in cpu_ranks)
    count, reason = probe_gpus()
    if count == 0:
        assert all(report["fallback"] == reason and report["backend"] == "cpu" for report in gpu_ranks)
    assert document["size"] == 36 and document["split"] == "14:4"
    assert document["mpi"] and document["numba_cache"]


@pytest.mark.mpi
def test_a_bad_gpu_memory_setting_is_a_usage_error_before_any_work(tmp_path):
    pack_scenes(str(tmp_path))
    output = tmp_path / "out"
    finished = run_mpicolor(2, "run", tmp_path, output, env=dict(os.environ, MPICOLOR_GPU_MEMORY="2G"))
    assert finished.returncode == 2, finished.stderr
    assert "MPICOLOR_GPU_MEMORY='2G' should be a number of bytes >= 16777216" in finished.stderr
    assert "Traceback" not in finished.stderr and not output.exists()


@pytest.mark.mpi
def test_run_with_gpu_ranks_and_no_gpu_says_so_once_per_rank(tmp_path):
    if probe_gpus()[0]:
        pytest.skip("a usable GPU is present")
    pack_scenes(str(tmp_path))
    output = tmp_path / "out"
    finished = run_mpicolor(2, "run", tmp_path, output, "--split", "0:1")
    assert finished.returncode == 0, finished.stderr
    said = [line for line in finished.stderr.splitlines() if "GPU rank computing on the CPU" in line]
    assert len(said) == 2 and {"[rank 0]" in line or "[rank 1]" in line for line in said} == {True}
    summary = json.loads((output / "run-summary.json").read_text())
    backends = [name for rank in summary["ranks"].values() for name in rank["backends"]]
    assert set(backends) == {"cpu"}
    rows = read_sqlite(str(output / "hist_car.tar_db.sqlite"))["images"]
    assert len(rows) == 4


# --- on a real device: skipped, with the reason, where there is none ---------------------------------------


@pytest.fixture(scope="module")
def cupy():
    module = pytest.importorskip("cupy", reason="CuPy is not installed: no GPU path to test here")
    count, reason = probe_gpus()
    if count == 0:
        pytest.skip(f"no usable GPU: {reason}")
    return module


def test_cupy_kernel_gives_the_cpu_palettes(cupy, frames):
    assert gpu.extract_palettes(frames, xp=cupy) == cpu_palettes(frames)
    assert gpu.extract_palettes(frames[:2]) == cpu_palettes(frames[:2])  # xp=None picks CuPy


def test_cupy_backend_binds_its_device_and_bounds_its_memory(cupy, frames):
    device = cupy.cuda.runtime.getDeviceCount() - 1
    backend = gpu.GpuDevice(device=device, memory=1 << 28)
    with backend.bound():
        assert cupy.cuda.Device().id == device
        assert cupy.get_default_memory_pool().get_limit() == 1 << 28
    assert backend.batch_budget == 1 << 27
    palettes = [gpu.sorted_palette(*colours, 5) for colours in backend.colours(frames[:3], 5, 0)]
    assert palettes == cpu_palettes(frames[:3])


def test_cuml_seed_is_close_to_scikit_learns(cupy, frames):
    pytest.importorskip("cuml", reason="cuML is not installed (x86_64 and aarch64 only)")
    image = cv2.resize(frames[0], (160, 90), interpolation=cv2.INTER_AREA)
    cuml_palette = gpu.sorted_palette(*gpu.GpuDevice(method="seed").colours([image], 5, 0)[0], 5)
    sklearn_palette = extract_palette(image, method="seed")
    pixels = image.reshape(-1, 3)
    # float32 and another k-means++: not the same centres, but as good a clustering (within 1%)
    assert kmeans.palette_inertia(pixels, cuml_palette.rgb[:, ::-1].astype(np.float64)) <= 1.01 * \
        kmeans.palette_inertia(pixels, sklearn_palette.rgb[:, ::-1].astype(np.float64))

