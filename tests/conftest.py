"""Fixtures shared by the tests."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests import helpers.py and hostile.py

from helpers import pack_scenes  # noqa: E402


@pytest.fixture
def input_dir(tmp_path):
    """INPUT_DIR with three tarballs of real frames (bottle.tar, car.tar, person.tar)."""
    folder = tmp_path / "input"
    folder.mkdir()
    pack_scenes(str(folder))
    return folder
