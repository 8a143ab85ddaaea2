"""Native (C++) kernels: compiled with g++ on first use, cached, loaded as torch ops.

`lstm.cpp` holds two: the LSTM layer's time loop (wrapped by `recurrent.native.lstm`), the fast path of the
`bptt` backend for a plain LSTMCell on CPU, and a whole generation step of a stack of plain LSTMCells
(`recurrent.native.step`), the fast path of `LanguageModel.generate` on CPU. The library is built once per source,
torch version and CPU into build/native/ at the repository root (git-ignored; or $RECURRENT_BUILD_DIR),
which takes about 10 s. Where it cannot be built (no g++, no headers) or RECURRENT_NATIVE=0 is set,
`load()` returns None with a one-line warning, and the engine and the stepper run their Python paths.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("lstm.cpp")
FLAGS = ["-O3", "-march=native", "-fno-trapping-math", "-std=c++20", "-shared", "-fPIC", "-w"]
_state: dict = {}  # "ops" once loaded, or "error": why it could not be


def build_dir() -> Path:
    if "RECURRENT_BUILD_DIR" in os.environ:
        return Path(os.environ["RECURRENT_BUILD_DIR"])
    root = Path(__file__).resolve().parents[2]  # the repository, for a source checkout
    return root / "build" / "native" if (root / "pyproject.toml").exists() else Path.home() / ".cache" / "recurrent"


def _cpu_flags() -> str:  # -march=native: a library built for one CPU must not be loaded on another
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _compile(target: Path, compiler: str) -> None:
    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    libs = [f"-L{p}" for p in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu"]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # build aside, then rename: safe if two race
        out = Path(tmp) / target.name
        cmd = [compiler, *FLAGS, abi, *includes, str(SOURCE), *libs, "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.splitlines()
            first_error = next((line for line in lines if "error" in line), lines[-1] if lines else "")
            raise RuntimeError(f"{cmd[0]} exited with {done.returncode}: {first_error.strip()}")
        os.replace(out, target)


def load():
    """torch.ops.recurrent_native once built and loaded, or None (with one warning) where it cannot be."""
    if "ops" in _state or "error" in _state:
        return _state.get("ops")
    if os.environ.get("RECURRENT_NATIVE", "1") == "0":
        _state["error"] = "disabled by RECURRENT_NATIVE=0"
        return None
    compiler = os.environ.get("CXX", "g++")
    key = "\n".join([SOURCE.read_text(), torch.__version__, sys.version, compiler, *FLAGS, _cpu_flags()])
    target = build_dir() / f"recurrent_native_{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    try:
        if not target.exists():
            _compile(target, compiler)
        torch.ops.load_library(str(target))
        _state["ops"] = torch.ops.recurrent_native
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        _state["error"] = f"{type(e).__name__}: {e}"
        warnings.warn(f"recurrent: native LSTM kernels unavailable ({_state['error']}); bptt and generation run "
                      "their Python paths",
                      stacklevel=2)
    return _state.get("ops")


def status() -> str:
    """'loaded', 'not loaded yet', or why the native kernels are unavailable."""
    return "loaded" if "ops" in _state else _state.get("error", "not loaded yet")
