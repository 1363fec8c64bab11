"""CMakeLists.txt's configure-time checks: an unsupported interpreter stops the configure with
one message, before any compile, and the build uses the Cython of the building interpreter.

These run `cmake -S <repo> -B <tmp> -G Ninja` (configure only, never a build) against this
test's own interpreter; the test hooks FASTTRACE_PRETEND_PYTHON_VERSION and
FASTTRACE_PRETEND_GIL_DISABLED make CMakeLists.txt see an alpha of the version after the newest
supported one (3.16.0a1), the one before the oldest (3.8) or a free-threaded build instead.
They need cmake >= 3.21 and ninja (skipped without them); the full configures also need Cython
and cython-cmake in this interpreter's environment, as in a development venv.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
THIS = f"CPython {platform.python_version()}"


def _range() -> tuple[str, str]:
    """FASTTRACE_MIN_PYTHON and FASTTRACE_MAX_PYTHON, as CMakeLists.txt sets them."""
    try:
        text = (REPO / "CMakeLists.txt").read_text()
    except OSError:
        return "3.9", "3.15"  # the tests skip: no source tree
    found = [re.search(rf"set\(FASTTRACE_{m}_PYTHON ([0-9.]+)\)", text) for m in ("MIN", "MAX")]
    assert all(found), "CMakeLists.txt sets FASTTRACE_MIN_PYTHON and FASTTRACE_MAX_PYTHON"
    return found[0].group(1), found[1].group(1)


LOWEST, HIGHEST = _range()
TOO_OLD = f"3.{int(LOWEST.split('.')[1]) - 1}.18"  # 3.8.18
TOO_NEW = f"3.{int(HIGHEST.split('.')[1]) + 1}.0a1"  # 3.16.0a1
SUPPORTED = f"fasttrace supports CPython {LOWEST} to {HIGHEST} with the GIL, 64-bit; this is "


def _tool(name: str) -> str | None:
    """`name` next to this interpreter (a venv's cmake or ninja), else on PATH."""
    here = Path(sysconfig.get_path("scripts")) / name
    return str(here) if here.exists() else shutil.which(name)


def _cmake_binary() -> tuple[str | None, str]:
    """(the real cmake executable, or None, and why not). A pyenv shim or the PyPI package's
    Python wrapper is resolved to the binary, so that the environment the tests give cmake
    (PATH, PYTHONPATH) reaches it unchanged."""
    cmake = _tool("cmake")
    if cmake is None:
        return None, "cmake not found (next to this Python or on PATH)"
    script = 'message("${CMAKE_COMMAND}")\nmessage("${CMAKE_VERSION}")\n'
    try:
        res = subprocess.run(
            [cmake, "-P", "/dev/stdin"], input=script, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{cmake} does not run: {e}"
    lines = res.stderr.strip().splitlines()
    if res.returncode != 0 or len(lines) < 2:
        return None, f"{cmake} -P failed: {res.stderr.strip()[-200:]}"
    binary, version = lines[-2], lines[-1]
    if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < (3, 21):
        return None, f"cmake {version} is older than the 3.21 CMakeLists.txt needs"
    return binary, ""


@pytest.fixture(scope="module")
def tools():
    """(cmake, ninja), or the tests are skipped with the reason. Looked up once, when a test of
    this module first runs, never at collection."""
    if not (REPO / "CMakeLists.txt").exists():
        pytest.skip("no CMakeLists.txt: not run from a source tree")
    cmake, why = _cmake_binary()
    if cmake is None:
        pytest.skip(why)
    ninja = _tool("ninja")
    if ninja is None:
        pytest.skip("ninja not found (next to this Python or on PATH)")
    return cmake, ninja


def _cython_cmake_dir() -> str | None:
    try:
        import Cython  # noqa: F401
        import cython_cmake.cmake
    except ImportError:
        return None
    return os.path.dirname(cython_cmake.cmake.__file__)


CYTHON_CMAKE = _cython_cmake_dir()
needs_cython = pytest.mark.skipif(
    CYTHON_CMAKE is None,
    reason="a full configure needs Cython and cython-cmake in this Python's environment "
    "(pip install cython cython-cmake, as in README's development setup)",
)


def configure(tools, build: Path, *defines: str, python: str = sys.executable, env=None):
    cmake, ninja = tools
    argv = [cmake, "-S", str(REPO), "-B", str(build), "-G", "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={ninja}", f"-DPython_EXECUTABLE={python}",
            "-DSKBUILD_PROJECT_NAME=fasttrace"]  # as scikit-build-core passes it
    if CYTHON_CMAKE:
        argv.append(f"-DCMAKE_MODULE_PATH={CYTHON_CMAKE}")
    argv += [f"-D{d}" for d in defines]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    return res.returncode, res.stdout + res.stderr


def flat(output: str) -> str:
    """CMake wraps a message's lines at 80 columns and indents them: undo that."""
    return re.sub(r"\s+", " ", output)


def assert_refused(build: Path, rc: int, output: str, this: str) -> None:
    text = flat(output)
    assert rc != 0, output
    assert text.count(SUPPORTED) == 1, output
    assert SUPPORTED + this + ": " + sys.executable in text, output
    assert "fasttrace: building for" not in text
    # Stopped at configure: no build file was generated, so nothing could be compiled, and no
    # step past the check (Cython, zlib, the targets) was reached.
    assert not (build / "build.ninja").exists()
    assert "fasttrace: Cython" not in text and "Found ZLIB" not in text
    assert not [p for p in build.rglob("*") if p.suffix == ".o" or p.name == "_core.c"]


@pytest.mark.parametrize(
    "defines, this",
    [
        ([f"FASTTRACE_PRETEND_PYTHON_VERSION={TOO_NEW}"], f"CPython {TOO_NEW}"),
        ([f"FASTTRACE_PRETEND_PYTHON_VERSION={TOO_OLD}"], f"CPython {TOO_OLD}"),
        (["FASTTRACE_PRETEND_GIL_DISABLED=ON"], THIS + " (free-threaded)"),
        (
            [f"FASTTRACE_PRETEND_PYTHON_VERSION={TOO_NEW}", "FASTTRACE_PRETEND_GIL_DISABLED=ON"],
            f"CPython {TOO_NEW} (free-threaded)",
        ),
    ],
    ids=["too-new", "too-old", "free-threaded", "too-new-free-threaded"],
)
def test_unsupported_interpreter_stops_configure(tools, tmp_path, defines, this):
    rc, output = configure(tools, tmp_path / "b", *defines)
    assert_refused(tmp_path / "b", rc, output, this)
    # The message says the test hook made it up, and what the interpreter really is.
    assert f"the interpreter is {THIS}]" in flat(output)


def test_supported_interpreter_passes_the_check(tools, tmp_path):
    rc, output = configure(tools, tmp_path / "b", f"FASTTRACE_PRETEND_PYTHON_VERSION={HIGHEST}.0")
    text = flat(output)
    assert SUPPORTED not in text, output
    assert f"fasttrace: building for CPython {HIGHEST}.0 (GIL): {sys.executable}" in text, output


@needs_cython
def test_configure_completes_and_pretending_is_one_run_only(tools, tmp_path):
    build = tmp_path / "b"
    rc, output = configure(tools, build, f"FASTTRACE_PRETEND_PYTHON_VERSION={TOO_NEW}")
    assert_refused(build, rc, output, f"CPython {TOO_NEW}")
    # The same build directory, configured again without the hook: the real interpreter.
    rc, output = configure(tools, build)
    assert rc == 0, output
    assert f"fasttrace: building for {THIS} (GIL): {sys.executable}" in flat(output)
    assert "test hook" not in output
    assert (build / "build.ninja").exists()


@needs_cython
def test_cython_comes_from_the_building_interpreter(tools, tmp_path):
    """As in pip's isolated build: Cython importable by the interpreter (through PYTHONPATH),
    no `cython` script beside it, and another `cython` first on PATH (as when a pyenv shim runs
    cmake). The build must use the interpreter's Cython, never the one on PATH."""
    import Cython

    bindir = tmp_path / "bin"
    fakedir = tmp_path / "fake"
    bindir.mkdir()
    fakedir.mkdir()
    python = bindir / "python3"
    python.symlink_to(os.path.realpath(sys.executable))  # a base interpreter, alone in its dir
    fake = fakedir / "cython"
    fake.write_text("#!/bin/sh\necho 'Cython version 3.9.99'\n")
    fake.chmod(0o755)
    site = os.path.dirname(os.path.dirname(Cython.__file__))
    env = dict(os.environ, PATH=f"{fakedir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=site)
    build = tmp_path / "b"
    rc, output = configure(tools, build, python=str(python), env=env)
    assert rc == 0, output
    text = flat(output)
    assert "3.9.99" not in text and str(fake) not in text, output
    want = f"fasttrace: Cython {Cython.__version__} from {os.path.dirname(Cython.__file__)}, "
    assert want + f"run as {python} -m cython" in text, output
    ninja = (build / "build.ninja").read_text()
    assert f"{python} -m cython " in ninja
    assert str(fake) not in ninja
