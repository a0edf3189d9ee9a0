"""Fixtures shared by the tests."""

import os
import subprocess
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


def _git_status():
    found = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], capture_output=True,
                           text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    return found.stdout if found.returncode == 0 else None


@pytest.fixture(autouse=True)
def repository_untouched():
    """No test writes into the checkout: ``git status`` is the same after every test as before it."""
    before = _git_status()
    yield
    assert _git_status() == before, "the test changed files in the repository"
