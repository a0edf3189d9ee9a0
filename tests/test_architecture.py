"""The house's rules (docs/architecture.md), checked on the source: imports point down, MPI stays in one room."""

import ast
import pathlib

import pytest

import mpicolor

PACKAGE = pathlib.Path(mpicolor.__file__).parent

# what each wing may import of mpicolor (besides itself and the package's __version__)
ALLOWED = {
    "engine": set(),
    "state": set(),
    "job": {"engine", "state"},
    "bench": {"job", "engine", "state"},  # bench coordinator drives rank 0's own classes
    "tools": {"job", "engine", "state"},
    "palette": {"engine"},  # the public shim of mpicolor.palette
}
TOP = {"cli", "__main__", "__init__"}  # the front door may import every wing


def modules():
    """Every module of the package as (dotted name, path)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts), path


def imported(path, package):
    """Every module ``path`` imports, at its top or inside functions, as absolute dotted names."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: ``from . import x`` in package p is ``from p import x``
                parents = package.split(".")[:len(package.split(".")) + 1 - node.level]
                base = ".".join(parents + [base] if base else parents)
            yield base
            # ``from mpicolor import kernels`` imports the module mpicolor.kernels
            yield from (f"{base}.{alias.name}" for alias in node.names if base == "mpicolor")


def wing(name):
    """The wing of a dotted module name: ``mpicolor.job.mpi`` -> ``job``."""
    return name.split(".")[1] if name.count(".") >= 1 else "__init__"


def test_every_module_sits_in_a_wing_or_at_the_front_door():
    for name, _ in modules():
        assert wing(name) in ALLOWED or wing(name) in TOP, f"{name} belongs to no wing of docs/architecture.md"


@pytest.mark.parametrize("name, path", list(modules()), ids=[name for name, _ in modules()])
def test_imports_point_down(name, path):
    own = wing(name)
    if own in TOP:
        return
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    wrong = sorted({target for target in imported(path, package)
                    if target.startswith("mpicolor.") and wing(target) not in ALLOWED[own] | {own, "__version__"}})
    assert not wrong, f"{name} (wing {own!r}) imports {wrong}; it may import {sorted(ALLOWED[own]) or 'only itself'}"


def test_only_job_mpi_imports_mpi4py():
    importers = sorted(name for name, path in modules()
                       if any(target.split(".")[0] == "mpi4py" for target in imported(path, name)))
    assert importers == ["mpicolor.job.mpi"]


def test_the_public_palette_api_still_imports_from_mpicolor_palette():
    from mpicolor.engine import decode, palette
    from mpicolor.palette import BadFrame, decode_frame, extract_palette, palette_from_bytes
    assert (extract_palette, palette_from_bytes, BadFrame) == (palette.extract_palette, palette.palette_from_bytes,
                                                               palette.BadFrame)
    assert decode_frame is decode.decode_frame
