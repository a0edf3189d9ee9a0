"""decode_frame: formats converted to BGR, every kind of bad frame refused with a reason."""

import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
import simplejpeg

from mpicolor.engine import palette
from mpicolor.engine.decode import MAX_BYTES_PER_PIXEL, METADATA_BYTES, BadFrame, check_head, decode_frame
from mpicolor.job.worker import HEAD_BYTES

# in the portable subset, which run/power-check.sh runs on ppc64le under emulation
pytestmark = pytest.mark.portable


def smooth_image(height=48, width=64):
    """A BGR gradient: compresses well and survives JPEG nearly unchanged."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)]).astype(np.uint8)


def encode(extension, image, *params):
    ok, encoded = cv2.imencode(extension, image, list(params))
    assert ok
    return encoded.tobytes()


@pytest.fixture
def jpeg_bytes():
    return encode(".jpg", smooth_image())


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_jpeg_decodes_to_bgr_like_opencv(jpeg_bytes):
    image = decode_frame(jpeg_bytes)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_jpeg_scale_is_reduced_dct_decode(scale):
    jpeg = encode(".jpg", smooth_image(50, 70))
    image = decode_frame(jpeg, scale=scale)
    assert image.shape == (-(-50 // scale), -(-70 // scale), 3)
    reduced = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
    np.testing.assert_array_equal(image, cv2.imdecode(np.frombuffer(jpeg, np.uint8), reduced[scale]))


def test_repeated_chroma_is_fastupsample_and_changes_only_subsampled_chroma():
    image = smooth_image()
    image[:, 30:, 2] = 255  # a sharp colour edge, where interpolated and repeated chroma differ
    subsampled = encode(".jpg", image)  # OpenCV writes 4:2:0
    repeated = decode_frame(subsampled, smooth_chroma=False)
    np.testing.assert_array_equal(repeated, simplejpeg.decode_jpeg(subsampled, "BGR", fastupsample=True))
    assert not np.array_equal(repeated, decode_frame(subsampled))
    # simplejpeg's encoder, not OpenCV's: IMWRITE_JPEG_SAMPLING_FACTOR is OpenCV 4.7's and mpicolor takes 4.6
    full_chroma = simplejpeg.encode_jpeg(np.ascontiguousarray(image), 95, "BGR", "444")
    np.testing.assert_array_equal(decode_frame(full_chroma, smooth_chroma=False), decode_frame(full_chroma))


def test_png_scale_is_area_resize():
    image = smooth_image(50, 70)
    decoded = decode_frame(encode(".png", image), scale=4)
    np.testing.assert_array_equal(decoded, cv2.resize(image, (18, 13), interpolation=cv2.INTER_AREA))


def test_png_bytes_decode_whatever_the_name():
    image = smooth_image()
    np.testing.assert_array_equal(decode_frame(encode(".png", image)), image)


def test_grayscale_png_and_jpeg_become_bgr():
    grey = smooth_image()[:, :, 0]
    np.testing.assert_array_equal(decode_frame(encode(".png", grey)), np.dstack([grey] * 3))
    assert decode_frame(encode(".jpg", grey)).shape == (48, 64, 3)


def test_alpha_png_drops_alpha():
    image = smooth_image()
    bgra = np.dstack([image, np.full(image.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(decode_frame(encode(".png", bgra)), image)


def test_16_bit_png_becomes_8_bit():
    image = smooth_image().astype(np.uint16) * 257
    decoded = decode_frame(encode(".png", image))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, (image >> 8).astype(np.uint8))


def test_cmyk_jpeg_becomes_bgr_like_opencv():
    cmyk = np.dstack([smooth_image(), np.full((48, 64), 40, np.uint8)])
    jpeg = simplejpeg.encode_jpeg(cmyk, 95, colorspace="CMYK")
    decoded = decode_frame(jpeg)
    assert decoded.shape == (48, 64, 3)
    np.testing.assert_array_equal(decoded, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))


def test_bad_frame_is_a_value_error_importable_from_palette():
    assert palette.BadFrame is BadFrame and issubclass(BadFrame, ValueError)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (np.random.default_rng(0).bytes(5000), "not a JPEG or PNG"),
    (b"GIF89a" + bytes(100), "not a JPEG or PNG"),
])
def test_not_an_image(data, reason):
    with pytest.raises(BadFrame, match=reason):
        decode_frame(data)


def test_truncated_jpeg():
    jpeg = encode(".jpg", cv2.resize(smooth_image(), (640, 480)))
    with pytest.raises(BadFrame, match="truncated JPEG"):
        decode_frame(jpeg[: len(jpeg) // 2])
    with pytest.raises(BadFrame, match="corrupt JPEG data"):
        decode_frame(jpeg[: len(jpeg) // 2] + b"\xff\xd9")  # cut, then an end marker
    with pytest.raises(BadFrame, match=r"corrupt or truncated JPEG header \(100 bytes\)"):
        decode_frame(jpeg[:100])


def test_jpeg_without_end_marker(jpeg_bytes):
    with pytest.raises(BadFrame, match="truncated JPEG.*FF D9"):
        decode_frame(jpeg_bytes[:-2])


def test_corrupt_jpeg_that_opencv_pads_with_grey_is_refused_quietly(capfd):
    jpeg = bytearray(encode(".jpg", cv2.resize(smooth_image(), (640, 480))))
    middle = len(jpeg) // 2
    jpeg[middle:middle + 40] = b"\xff\xd0" * 20  # restart markers where none belong
    jpeg = bytes(jpeg)
    capfd.readouterr()
    with pytest.raises(BadFrame, match="corrupt JPEG data"):
        decode_frame(jpeg)
    assert capfd.readouterr().err == ""
    # The reason for strict decoding: OpenCV returns an image for these bytes.
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None


def test_truncated_png():
    png = encode(".png", smooth_image())
    with pytest.raises(BadFrame, match="truncated PNG"):
        decode_frame(png[:-20])


def test_corrupt_png():
    png = bytearray(encode(".png", smooth_image()))
    png[60:90] = bytes(30)
    with pytest.raises(BadFrame, match="corrupt PNG"):
        decode_frame(bytes(png))


def huge_jpeg_header(jpeg_bytes, height, width):
    """The JPEG with its frame header (SOF0) claiming height x width."""
    start = jpeg_bytes.index(b"\xff\xc0")
    return jpeg_bytes[:start + 5] + struct.pack(">HH", height, width) + jpeg_bytes[start + 9:]


def huge_png(height, width):
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(bytes(1000))) + png_chunk(b"IEND", b""))


@pytest.mark.parametrize("make", [lambda jpeg: huge_jpeg_header(jpeg, 30000, 30000),
                                  lambda jpeg: huge_png(30000, 30000)], ids=["jpeg", "png"])
def test_huge_frame_refused_from_header_without_allocating(jpeg_bytes, make):
    data = make(jpeg_bytes)
    tracemalloc.start()
    try:
        with pytest.raises(BadFrame, match="30000x30000 = 900,000,000 pixels is above max_pixels=50,000,000"):
            decode_frame(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


def test_max_pixels_is_configurable(jpeg_bytes):
    with pytest.raises(BadFrame, match="above max_pixels=3,000"):
        decode_frame(jpeg_bytes, max_pixels=3000)
    assert decode_frame(jpeg_bytes, max_pixels=48 * 64).shape == (48, 64, 3)


@pytest.mark.parametrize("keywords, message", [
    ({"scale": 3}, r"scale=3 should be one of \(1, 2, 4, 8\)"),
    ({"max_pixels": 0}, "max_pixels=0 should be an int >= 1"),
])
def test_argument_errors(jpeg_bytes, keywords, message):
    with pytest.raises(ValueError, match=message):
        decode_frame(jpeg_bytes, **keywords)


# --- check_head: a member refused from its first bytes, before the rest is read ------------------------------

GIANT = 5 << 30  # a tar member declaring 5 GiB


def with_app_segments(jpeg, count, length=60_000):
    """The JPEG with ``count`` APP1 segments of ``length`` bytes before its frame header (as EXIF, ICC and XMP
    metadata put them)."""
    segment = b"\xff\xe1" + struct.pack(">H", length + 2) + bytes(length)
    return jpeg[:2] + segment * count + jpeg[2:]


@pytest.mark.parametrize("fmt", ["jpeg", "jpeg-444-q100", "progressive", "png", "png-16-bit-rgba"])
def test_real_frames_pass_check_head_from_their_head(fmt):
    noise = np.random.default_rng(0).integers(0, 256, (256, 320, 3), np.uint8)  # the least compressible
    data = {"jpeg": lambda: encode(".jpg", smooth_image()),
            "jpeg-444-q100": lambda: simplejpeg.encode_jpeg(noise, 100, colorsubsampling="444"),
            "progressive": lambda: encode(".jpg", noise, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
            "png": lambda: encode(".png", smooth_image()),
            "png-16-bit-rgba": lambda: encode(".png", np.dstack([noise, noise[..., :1]]).astype(np.uint16) * 257,
                                              cv2.IMWRITE_PNG_COMPRESSION, 0)}[fmt]()
    assert check_head(data[:HEAD_BYTES], len(data))
    decode_frame(data)


def test_a_frame_header_behind_large_metadata_needs_a_longer_head(jpeg_bytes):
    data = with_app_segments(jpeg_bytes, 3)
    assert not check_head(data[:HEAD_BYTES], len(data))  # not refused: read further
    assert check_head(data, len(data))
    assert decode_frame(data).shape == (48, 64, 3)


@pytest.mark.parametrize("head, size, message", [
    (bytes(65536), GIANT, r"not a JPEG or PNG image \(5368709120 bytes starting b'\\x00\\x00"),
    (b"", 0, r"empty frame data \(0 bytes\)"),
    (b"GIF89a" + bytes(100), 106, "not a JPEG or PNG image"),
    (b"\x89PNG\r\n\x1a\n" + bytes(60), 68, "corrupt PNG: no IHDR header chunk in 68 bytes"),
    (b"\xff\xd8\xff\xda" + bytes(60), 64, "corrupt JPEG header: marker FF DA at byte 2 before the frame header"),
    (b"\xff\xd8\xff\xe0\x00\x04ab\x12" + bytes(60), 69, "corrupt JPEG header: no marker at byte 8"),
], ids=["zeros", "empty", "gif", "png-without-ihdr", "jpeg-scan-first", "jpeg-no-marker"])  # short test names:
# pytest puts the name in the environment, and 64 KiB of bytes there is too long for exec (qemu: E2BIG)
def test_check_head_refuses_what_is_no_frame(head, size, message):
    with pytest.raises(BadFrame, match=message):
        check_head(head, size)


def test_check_head_refuses_a_member_far_larger_than_its_declared_pixels(jpeg_bytes):
    png = encode(".png", smooth_image())
    for kind, data in (("JPEG", jpeg_bytes), ("PNG", png)):
        most = MAX_BYTES_PER_PIXEL * 64 * 48 + METADATA_BYTES
        assert check_head(data, most)
        with pytest.raises(BadFrame, match=f"{kind} of 64x48 pixels in 5,368,709,120 bytes: more than a frame of "
                                           f"that size can hold \\({most:,} bytes at most\\); not read"):
            check_head(data, GIANT)


def test_check_head_refuses_pixels_above_max_pixels_as_decode_frame_does(jpeg_bytes):
    message = "JPEG of 64x48 = 3,072 pixels is above max_pixels=3,000"
    with pytest.raises(BadFrame, match=message):
        check_head(jpeg_bytes, len(jpeg_bytes), max_pixels=3000)
    with pytest.raises(BadFrame, match=message):
        decode_frame(jpeg_bytes, max_pixels=3000)


def test_check_head_refuses_metadata_without_a_frame_header(jpeg_bytes):
    data = with_app_segments(jpeg_bytes, METADATA_BYTES // 60_000 + 1)
    head = data[:METADATA_BYTES]
    assert not check_head(head[:METADATA_BYTES // 2], len(data))
    with pytest.raises(BadFrame, match=f"corrupt JPEG: no frame header in the first {METADATA_BYTES:,} of"):
        check_head(head, len(data))
