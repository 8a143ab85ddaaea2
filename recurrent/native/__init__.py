"""Native (C++) kernels: compiled with g++ on first use, cached per user, loaded as torch ops.

`lstm.cpp` holds two: the LSTM layer's time loop (wrapped by `recurrent.native.lstm`), the fast path of the
`bptt` backend for a plain LSTMCell on CPU, and a whole generation step of a stack of plain LSTMCells
(`recurrent.native.step`), the fast path of `LanguageModel.generate` on CPU. `gru.cpp`, compiled into the same
library, holds the GRU's and the LayerNorm LSTM's time loops (`recurrent.native.gru`, `.layernorm_lstm`).

Building. The library is built once per source, torch version, compiler and instruction set (about 10 s) for
the set `recurrent.hardware.native_isa()` names ('avx512bf16', 'avx512', 'avx2', 'neon' or 'generic'; the
environment variable RECURRENT_NATIVE_ISA picks a lower one), with that set's `hardware.COMPILE_FLAGS`, never
-march=native. The set is in the file's name (recurrent_native_avx2_<hash>.so), so a library built for one CPU
is never loaded on another.

The cache is per user: $RECURRENT_BUILD_DIR if set, else $XDG_CACHE_HOME/recurrent/native (by default
~/.cache/recurrent/native); never the installed package or the repository. Loading a library runs its code, so
folders it creates are private (mode 0700), and it neither builds in nor loads from a folder that is a symbolic
link, is not the user's own or is writable by group or others, nor loads a file that is not a regular file of
the user's own, or is writable by group or others.

Where the library cannot be built or loaded (no g++, no headers, an unsafe cache, a RECURRENT_NATIVE_ISA this
CPU cannot run) or RECURRENT_NATIVE=0 is set, `load()` returns None with a one-line warning, and the engine and
the stepper run their Python paths. `status()` says which; `info()` says everything, for `recurrent info`:

    >>> native.load(); native.info()
    {'status': 'loaded', 'isa': 'avx2', 'flags': ['-O3', ..., '-mavx2', '-mfma', '-mf16c'],
     'library': '/home/me/.cache/recurrent/native/recurrent_native_avx2_0123456789abcdef.so',
     'build_dir': '/home/me/.cache/recurrent/native', 'compiler': 'g++'}
"""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from recurrent import hardware

SOURCE = Path(__file__).with_name("lstm.cpp")
# every source compiled into the one library: lstm.cpp, and gru.cpp (the GRU and LayerNorm LSTM loops)
SOURCES = [SOURCE, Path(__file__).with_name("gru.cpp")]
HEADERS = [Path(__file__).with_name(name) for name in ("common.h", "pointwise.h")]  # included: part of a build's name
# every build's flags; the instruction set's come after them. -mtune=generic: tuned for no one CPU either
FLAGS = ["-O3", "-mtune=generic", "-fno-trapping-math", "-std=c++20", "-shared", "-fPIC", "-w"]
_state: dict = {}  # "ops" once loaded, or "error": why it could not be; "isa" and "library" once chosen


def build_dir() -> Path:
    """Where the library is built and cached: $RECURRENT_BUILD_DIR, else $XDG_CACHE_HOME/recurrent/native."""
    if os.environ.get("RECURRENT_BUILD_DIR"):
        return Path(os.environ["RECURRENT_BUILD_DIR"]).absolute()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):  # unset, or relative, which the XDG spec says to ignore
        cache = Path.home() / ".cache"
    return Path(cache) / "recurrent" / "native"


def compiler() -> str:
    """The C++ compiler: $CXX, else g++."""
    return os.environ.get("CXX", "g++")


def openmp() -> list[str]:
    """["-fopenmp"] where torch runs its threads on GNU OpenMP (libgomp, as torch's Linux wheels) and the compiler
    is g++: the kernels' at::parallel_for then splits work over torch's own thread pool (the loader gives this
    library the libgomp torch already loaded: one pool, not two). Elsewhere none (macOS's libomp; clang, whose
    -fopenmp links libomp, often not installed): there at::parallel_for runs serially, with the same results."""
    name = Path(compiler()).name
    if "g++" not in name or "clang" in name:
        return []
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return ["-fopenmp"] if "libgomp" in maps and "OpenMP" in torch.__config__.parallel_info() else []


def flags(isa: str) -> list[str]:
    """The compiler flags for `isa`: the common ones, OpenMP's where torch uses libgomp, then the instruction set's."""
    return [*FLAGS, *openmp(), *hardware.COMPILE_FLAGS[isa]]


def library(isa: str) -> Path:
    """The library's path for `isa`: named by the set, and a hash of all that goes into the build."""
    sources = [s.read_text() for s in [*SOURCES, *HEADERS]]
    key = "\n".join([*sources, torch.__version__, sys.version, compiler(), isa, *flags(isa)])
    return build_dir() / f"recurrent_native_{isa}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


# --- the cache: private folders, and nothing loaded that another user could have written ----------------

def _make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each with mode 0700. os.makedirs(mode=0o700) is not enough: the
    umask is applied to the mode, and the parents get the default mode."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:  # made by a process beside us: checked like any other folder
            continue
        d.chmod(0o700)


def unsafe(path: Path, is_dir: bool) -> str | None:
    """Why `path` is unsafe to build in (a folder) or to load (a library), or None when it is safe: it must be
    a real folder or a regular file (not a symbolic link), our own, and not writable by group or others."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if is_dir and not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if not is_dir and not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"it is owned by uid {st.st_uid}, not by this user ({os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _refuse_unsafe(path: Path, is_dir: bool) -> None:
    reason = unsafe(path, is_dir)
    if reason:
        raise PermissionError(f"refused {path}: {reason}")


def _compile(target: Path, isa: str) -> None:
    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    libs = [f"-L{p}" for p in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu"]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # build aside, then rename: safe if two race
        out = Path(tmp) / target.name
        cmd = [compiler(), *flags(isa), abi, *includes, *map(str, SOURCES), *libs, "-o", str(out)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.splitlines()
            first_error = next((line for line in lines if "error" in line), lines[-1] if lines else "")
            raise RuntimeError(f"{cmd[0]} exited with {done.returncode}: {first_error.strip()}")
        out.chmod(0o700)  # the linker's mode follows the umask, which may leave it group-writable (002)
        os.replace(out, target)


def load():
    """torch.ops.recurrent_native once built and loaded, or None (with one warning) where it cannot be."""
    if "ops" in _state or "error" in _state:
        return _state.get("ops")
    if os.environ.get("RECURRENT_NATIVE", "1") == "0":
        _state["error"] = "disabled by RECURRENT_NATIVE=0"
        return None
    try:
        isa = _state["isa"] = hardware.native_isa()  # ValueError: a RECURRENT_NATIVE_ISA this CPU cannot run
        target = _state["library"] = library(isa)
        _make_private_dirs(target.parent)
        _refuse_unsafe(target.parent, is_dir=True)
        if not os.path.lexists(target):
            _compile(target, isa)
        _refuse_unsafe(target, is_dir=False)
        torch.ops.load_library(str(target))
        _state["ops"] = torch.ops.recurrent_native
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:  # PermissionError: refused
        _state["error"] = f"{type(e).__name__}: {e}"
        warnings.warn(f"native LSTM kernels unavailable ({_state['error']}); bptt and generation run "
                      "their Python paths",
                      stacklevel=2)
    return _state.get("ops")


def status() -> str:
    """'loaded', 'not loaded yet', or why the native kernels are unavailable."""
    return "loaded" if "ops" in _state else _state.get("error", "not loaded yet")


def info() -> dict:
    """What `recurrent info` reports: status(), the instruction set and flags the library is (or would be)
    built for, its path, the cache folder and the compiler. Builds nothing: call load() first to know whether
    it loads. isa, flags and library are None where RECURRENT_NATIVE_ISA names a set this CPU cannot run."""
    isa, path = _state.get("isa"), _state.get("library")  # what load() chose, if it ran
    if isa is None:
        try:
            isa = hardware.native_isa()
            path = library(isa)
        except ValueError:  # a RECURRENT_NATIVE_ISA this CPU cannot run: load() says so in status()
            pass
    return {"status": status(), "isa": isa, "flags": flags(isa) if isa else None,
            "library": str(path) if path else None, "build_dir": str(path.parent if path else build_dir()),
            "compiler": compiler()}
