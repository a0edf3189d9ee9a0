"""Letterbox and pillarbox detection."""

import numpy as np
import pytest

from mpicolor.engine.borders import crop, detect_borders


def framed(height=90, width=160, top=10, bottom=12, left=0, right=0, bar=8):
    image = np.full((height, width, 3), bar, np.uint8)
    image[top:height - bottom, left:width - right] = (40, 120, 200)
    return image


def test_letterbox_and_pillarbox():
    assert detect_borders(framed(top=10, bottom=12)) == (10, 12, 0, 0)
    assert detect_borders(framed(top=0, bottom=0, left=20, right=21)) == (0, 0, 20, 21)
    image = framed(top=10, bottom=12, left=20, right=21)
    assert crop(image, detect_borders(image)).shape == (68, 119, 3)
    assert (crop(image, detect_borders(image)) == (40, 120, 200)).all()


def test_no_bars_dark_scene_and_bright_bars():
    assert detect_borders(framed(top=0, bottom=0)) == (0, 0, 0, 0)
    assert detect_borders(np.full((90, 160, 3), 5, np.uint8)) == (0, 0, 0, 0)  # night, not a letterbox
    assert detect_borders(framed(bar=60)) == (0, 0, 0, 0)  # grey bars are picture


def test_a_dark_half_is_not_a_bar():
    image = framed(top=0, bottom=0)
    image[:60] = 0  # two thirds of the frame dark: a scene, not a bar
    assert detect_borders(image) == (0, 0, 0, 0)


@pytest.mark.mpi
def test_run_with_crop_borders_records_the_crop_and_leaves_the_bars_out(tmp_path):
    import cv2

    from helpers import bundled_frames, pack_tarball, read_sqlite, run_mpicolor

    members = []
    for path in bundled_frames()[:4]:
        picture = cv2.imread(path)
        letterboxed = cv2.copyMakeBorder(picture, 120, 120, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        members.append((f"film/{path.rsplit('/', 1)[1]}", cv2.imencode(".jpg", letterboxed)[1].tobytes()))
    (tmp_path / "input").mkdir()
    pack_tarball(str(tmp_path / "input" / "film.tar"), members)
    plain, cropped = tmp_path / "plain", tmp_path / "cropped"
    assert run_mpicolor(2, "run", tmp_path / "input", plain).returncode == 0
    finished = run_mpicolor(2, "run", tmp_path / "input", cropped, "--crop-borders", "auto")
    assert finished.returncode == 0, finished.stderr
    plain_rows = read_sqlite(plain / "hist_film.tar_db.sqlite")["images"]
    cropped_rows = read_sqlite(cropped / "hist_film.tar_db.sqlite")["images"]
    assert all(row[1] < 0x101010 for row in plain_rows)  # the bars dominate the original's palette
    for row in cropped_rows:
        top, bottom, left, right = row[-4:]
        assert 118 <= top <= 122 and 118 <= bottom <= 122 and left == right == 0
        assert row[1] >= 0x101010 or row[6] < 0.5  # the dominant colour is the picture's
    refused = run_mpicolor(1, "run", tmp_path / "input", cropped)
    assert refused.returncode == 3 and "crop_borders" in refused.stderr
