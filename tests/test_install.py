"""A clean install as a user gets it: the wheel of `python -m build --wheel`, and `pip install .` (not editable),
each into a new virtual environment, then the `recurrent` command run from another directory.

Marked `slow` (about 1.5 minutes, most of it pip installing torch and the dependencies into the new venv): a plain
`pytest` / `make test` reports these skipped, and .ci/run runs them with `pytest -m slow tests/test_install.py`.
Needs what `make` needs anyway: the package index pip is set up with (torch==2.13.0, the dependencies, setuptools
for the isolated build) and the `build` package (the `dev` extra).

The source is copied into a temporary folder first, so building never writes build/ or *.egg-info into the
checkout, and nothing stale from an earlier build in the checkout can end up in the wheel. pip runs with the
real environment (its configuration and cache); the `recurrent` commands run with HOME and XDG_CACHE_HOME in a
temporary folder, so the native kernels are built into a per-user cache that starts empty.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the CPU wheel `make` installs; an unpinned torch would pull a multi-GB CUDA build
# Not part of a build: at the top, the checkout's own venv, build output and runs; anywhere, caches.
TOP_IGNORED = {".git", ".venv", "build", "dist", "runs"}
IGNORED = shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache", "*.so", "*.pyc")


def ignore(folder: str, names: list[str]) -> set[str]:
    top = TOP_IGNORED & set(names) if Path(folder) == ROOT else set()
    return top | IGNORED(folder, names)


def run(cmd, *, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"{' '.join(map(str, cmd))} exited with {done.returncode}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    return done


def source_copy(dst: Path) -> Path:
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


def pip_env() -> dict:
    """The real environment (pip's configuration, index and cache), less what would leak the checkout in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RECURRENT_BUILD_DIR")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("install")


@pytest.fixture(scope="module")
def home(tmp) -> Path:
    (tmp / "home").mkdir()
    return tmp / "home"


@pytest.fixture(scope="module")
def user_env(home) -> dict:
    """For the `recurrent` commands: a fresh HOME and cache, so the native build goes to a new per-user cache."""
    return {**pip_env(), "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
            "MPLCONFIGDIR": str(home / ".config" / "matplotlib")}


@pytest.fixture(scope="module")
def wheel(tmp) -> Path:
    src, dist = source_copy(tmp / "src-wheel"), tmp / "dist"
    run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src], cwd=tmp, env=pip_env())
    (built,) = dist.glob("recurrent-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp, wheel) -> Path:
    """A new venv with torch and the wheel (and its dependencies) installed. --no-compile: pip writing .pyc files
    for torch roughly doubles the install time; Python compiles what it imports."""
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp, env=pip_env())
    run([venv / "bin" / "pip", "install", "--no-compile", TORCH, wheel], cwd=tmp, env=pip_env())
    return venv


@pytest.fixture(scope="module")
def workdir(tmp) -> Path:
    (tmp / "work").mkdir()  # not the checkout: nothing there can be imported by accident
    return tmp / "work"


@pytest.fixture(scope="module")
def trained(venv, workdir, user_env) -> subprocess.CompletedProcess:
    """`recurrent train lm` with no data: the Python standard library's source, shipped in the package."""
    return run([venv / "bin" / "recurrent", "train", "lm", "--max-steps", "20", "--hidden-size", "32", "--out",
                "run", "--max-time", "60", "--no-progress"], cwd=workdir, env=user_env)


def test_the_wheel_ships_the_cpp_source_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "recurrent/native/lstm.cpp" in names  # compiled on first use, from the installed package
    assert "recurrent/cli/main.py" in names and "recurrent/data/stdlib.py" in names
    assert "recurrent = recurrent.cli.main:main" in entry_points
    assert not any(n.startswith(("tests/", "benchmarks/", "build/")) for n in names), sorted(names)[:20]


def test_the_installed_command_trains_and_generates_from_another_directory(venv, workdir, user_env, home,
                                                                           trained):
    where = run([venv / "bin" / "python", "-c", "import recurrent; print(recurrent.__file__)"],
                cwd=workdir, env=user_env).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the checkout
    assert "best valid loss" in trained.stdout
    assert (workdir / "run" / "model.safetensors").is_file() and (workdir / "run" / "model.json").is_file()

    generated = run([venv / "bin" / "recurrent", "generate", "run", "--length", "50", "--seed", "1"],
                    cwd=workdir, env=user_env)
    assert len(generated.stdout.strip()) >= 10, generated.stdout
    if shutil.which(os.environ.get("CXX", "g++")):  # the native kernels built from the installed lstm.cpp
        warnings = trained.stderr + generated.stderr
        assert "native LSTM kernels unavailable" not in warnings, warnings
        assert list((home / ".cache" / "recurrent").rglob("*.so")), "no native library in the per-user cache"


def test_pip_install_of_the_source_tree(tmp, venv, workdir, user_env, trained):
    """`pip install .` (a regular, not editable, install) replaces the wheel's install; the command still runs."""
    src = source_copy(tmp / "src-pip")
    run([venv / "bin" / "pip", "uninstall", "-y", "recurrent"], cwd=tmp, env=pip_env())
    run([venv / "bin" / "pip", "install", "--no-compile", "."], cwd=src, env=pip_env())
    where = Path(run([venv / "bin" / "python", "-c", "import recurrent; print(recurrent.__file__)"],
                     cwd=workdir, env=user_env).stdout.strip())
    assert where.is_relative_to(venv) and (where.parent / "native" / "lstm.cpp").is_file(), where
    generated = run([venv / "bin" / "recurrent", "generate", "run", "--length", "50", "--seed", "1"],
                    cwd=workdir, env=user_env)
    assert len(generated.stdout.strip()) >= 10, generated.stdout
