"""Fixtures shared by the tests."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests import helpers.py and hostile.py

from helpers import pack_scenes  # noqa: E402
from mpicolor.bench import run as bench_run  # noqa: E402

# CI's second MPI runs only the tests that start mpiexec (run/test.sh sets it): the rest do not use MPI at all
MPI_ONLY = "MPICOLOR_TESTS_MPI_ONLY"


def pytest_collection_modifyitems(config, items):
    if os.environ.get(MPI_ONLY):
        skipped = [item for item in items if item.get_closest_marker("mpi") is None]
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if item.get_closest_marker("mpi") is not None]


@pytest.fixture(autouse=True)
def mpiexec_only_in_mpi_tests(request, monkeypatch):
    """A test that starts mpiexec is marked ``mpi``, so that ``pytest -m "not mpi"`` is the in-process suite and
    the second MPI's pass misses none: an unmarked test that launches fails, saying so."""
    if request.node.get_closest_marker("mpi") is None:
        def unmarked():
            raise AssertionError(f"{request.node.nodeid} starts mpiexec: mark it @pytest.mark.mpi")
        monkeypatch.setattr(bench_run, "mpiexec_command", unmarked)


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


@pytest.fixture(autouse=True, scope="module")
def repository_untouched(request):
    """No test writes into the checkout: ``git status`` is the same after every test module as before it
    (checked per module, not per test: two ``git status`` a test cost more than most in-process tests)."""
    before = _git_status()
    yield
    assert _git_status() == before, f"a test of {request.module.__name__} changed files in the repository"
