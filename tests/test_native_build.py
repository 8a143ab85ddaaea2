"""How recurrent/native builds, caches and loads its library: the cache's safety checks, the instruction set in the
library's name, and lstm.cpp compiled for every instruction set it has a path for (x86 and aarch64).

The compile tests take about 15 s each (torch's headers): each builds with the flags `native.flags` gives, as an
object (-c), and checks that g++ vectorised the gate loops, which are written for it to.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

from recurrent import hardware, native

X86 = platform.machine().lower() in ("x86_64", "amd64")
# the gate loops (forward_step, backward_step, lstm_gates): one line each in lstm.cpp
GATE_LOOP = "for (int64_t j = 0; j < H; ++j) {"


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """native as if nothing were loaded yet, with no compiler (a build fails fast) and no ISA override."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.delenv("RECURRENT_NATIVE", raising=False)
    monkeypatch.delenv("RECURRENT_NATIVE_ISA", raising=False)
    return tmp_path


def load_refused(match: str) -> str:
    """load() with one warning that matches; returns status()."""
    with pytest.warns(UserWarning, match="native LSTM kernels unavailable") as caught:
        assert native.load() is None
        assert native.load() is None
    assert len(caught) == 1 and re.search(match, str(caught[0].message)), caught[0].message
    assert "\n" not in str(caught[0].message)
    return native.status()


# --- where the library lives ----------------------------------------------------------------------------

@pytest.mark.skipif(os.environ.get("RECURRENT_NATIVE") == "0", reason="the native library is turned off")
def test_every_source_builds_and_loads_here():
    """A compile error in any source (gru.cpp, not only lstm.cpp) leaves native.load() None, and every test of a
    native path then passes on the Python fallback with only a warning: this test fails instead."""
    if shutil.which(native.compiler()) is None:
        pytest.skip(f"no C++ compiler ({native.compiler()})")
    assert native.load() is not None, native._state.get("error")
    for op in ("lstm_forward", "gru_forward", "layernorm_lstm_forward", "min_scan_forward", "lm_step"):
        assert hasattr(torch.ops.recurrent_native, op), op


def test_the_build_dir_is_the_users_cache_never_the_package(monkeypatch, tmp_path):
    monkeypatch.delenv("RECURRENT_BUILD_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native.build_dir() == tmp_path / "recurrent" / "native"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: ignored
    assert native.build_dir() == Path.home() / ".cache" / "recurrent" / "native"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert native.build_dir() == Path.home() / ".cache" / "recurrent" / "native"
    package = Path(native.__file__).resolve().parents[1]
    assert package not in native.build_dir().resolve().parents
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(tmp_path / "mine"))
    assert native.build_dir() == tmp_path / "mine"


def test_the_library_is_named_by_its_instruction_set(fresh, monkeypatch):
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(fresh))
    info = native.info()
    assert info["isa"] == hardware.native_isa() and info["build_dir"] == str(fresh)
    assert re.fullmatch(rf"recurrent_native_{info['isa']}_[0-9a-f]{{16}}\.so", Path(info["library"]).name)
    assert info["flags"] == native.FLAGS + native.openmp() + hardware.COMPILE_FLAGS[info["isa"]]
    assert "-march=native" not in info["flags"]
    names = {native.library(isa).name for isa in hardware.ISAS}
    assert len(names) == len(hardware.ISAS)  # one file per set: never one set's library loaded for another


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_library_runs_on_torchs_own_openmp_pool():
    """Built with -fopenmp where torch runs on libgomp, so that the kernels' at::parallel_for splits rows over
    torch's threads (without it, at::parallel_for runs serially); and loaded beside torch's libgomp, not a second
    OpenMP runtime with a pool of its own."""
    if native.load() is None:
        pytest.skip(f"the native library is not available here: {native._state.get('error')}")
    # in a fresh process: other packages in this one (scikit-learn) load OpenMP runtimes of their own
    code = ("import torch; from recurrent import native; assert native.load() is not None; "
            "print(*sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l}), sep='\\n')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    gomps = done.stdout.split()
    if not gomps:
        pytest.skip("torch does not run on libgomp here")
    assert "-fopenmp" in native.flags(native._state["isa"])
    assert len(gomps) == 1, f"two OpenMP runtimes loaded: {gomps}"


@pytest.mark.parametrize("cxx, wanted", [("clang++", False), ("/opt/llvm/bin/clang++-18", False), ("g++", None),
                                         ("/usr/bin/x86_64-linux-gnu-g++-12", None)])
def test_only_g_plus_plus_builds_with_openmp(monkeypatch, cxx, wanted):
    """clang's -fopenmp links libomp, which is often not installed (and is not torch's libgomp): no OpenMP there.
    For g++ it follows torch's runtime (None: whatever openmp() says for g++ in this process)."""
    monkeypatch.setenv("CXX", "g++")
    for_gxx = native.openmp()
    monkeypatch.setenv("CXX", cxx)
    assert native.openmp() == ([] if wanted is False else for_gxx)


def test_a_bad_native_isa_falls_back_with_one_warning(fresh, monkeypatch):
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(fresh))
    monkeypatch.setenv("RECURRENT_NATIVE_ISA", "bogus")
    assert load_refused("RECURRENT_NATIVE_ISA='bogus'").startswith("ValueError: ")
    assert native.info()["isa"] is None and native.info()["library"] is None


# --- the cache's safety checks ---------------------------------------------------------------------------

def test_created_folders_are_private_whatever_the_umask(fresh, monkeypatch):
    build = fresh / "cache" / "recurrent" / "native"
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(build))
    old = os.umask(0o002)  # a group-writable default, as on systems with a group per user
    try:
        load_refused("FileNotFoundError")  # the folders are made, then the build fails: no compiler
    finally:
        os.umask(old)
    for d in (fresh / "cache", build.parent, build):
        assert d.stat().st_mode & 0o777 == 0o700, d


def test_a_folder_others_can_write_is_refused(fresh, monkeypatch):
    shared = fresh / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(shared))
    status = load_refused(rf"refused {re.escape(str(shared))}: it is writable by group or others \(mode 777\)")
    assert status.startswith("PermissionError: refused")
    assert list(shared.iterdir()) == []  # nothing built there


def test_a_symlinked_folder_is_refused(fresh, monkeypatch):
    real = fresh / "real"
    real.mkdir(mode=0o700)
    (fresh / "link").symlink_to(real)
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(fresh / "link"))
    load_refused("it is a symbolic link")


def plant(folder: Path) -> Path:
    """A file where the library would be: not a library (loading it would fail), but it is refused before."""
    folder.mkdir(mode=0o700)
    target = native.library(hardware.native_isa())
    target.write_bytes(b"not a library")
    return target


def test_a_library_others_can_write_is_refused(fresh, monkeypatch):
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(fresh / "build"))
    target = plant(fresh / "build")
    target.chmod(0o666)
    load_refused(rf"refused {re.escape(str(target))}: it is writable by group or others \(mode 666\)")


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="giving a file away needs root")
def test_a_library_of_another_user_is_refused(fresh, monkeypatch):
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(fresh / "build"))
    target = plant(fresh / "build")
    target.chmod(0o600)
    os.chown(target, 65534, 65534)  # nobody
    load_refused(rf"refused {re.escape(str(target))}: it is owned by uid 65534")


# --- lstm.cpp compiles for every instruction set -----------------------------------------------------------

def compile_object(cxx: str, isa: str, out: Path) -> list[str]:
    """Compile lstm.cpp to an object with `isa`'s build flags; returns the lines in which g++ reports a
    vectorised loop. Fails the test with the compiler's first error."""
    flags = [f for f in native.flags(isa) if f != "-shared"]  # an object, not a library: links nothing
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    cmd = [cxx, *flags, abi, *includes, "-fopt-info-vec-optimized", "-c", str(native.SOURCE), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 0, f"{cxx} for {isa}: {errors[:1] or done.stderr[-2000:]}"
    return [line for line in done.stderr.splitlines() if "loop vectorized" in line]


def assert_gate_loops_vectorised(vectorised: list[str]) -> None:
    source = native.SOURCE.read_text().splitlines()
    lines = [i + 1 for i, line in enumerate(source) if line.strip() == GATE_LOOP]
    assert len(lines) == 3, f"expected the three gate loops ({GATE_LOOP!r}), found lines {lines}"
    done = {int(m.group(1)) for m in (re.search(r"lstm\.cpp:(\d+):", v) for v in vectorised) if m}
    assert set(lines) <= done, f"gate loops at lines {sorted(set(lines) - done)} of lstm.cpp were not vectorised"


def is_gcc(cxx: str) -> bool:  # -fopt-info is g++'s
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return "clang" not in version.lower() and ("g++" in version or "GCC" in version)


CROSS = "aarch64-linux-gnu-g++"  # Debian's g++-aarch64-linux-gnu; CI installs it where it can
TARGETS = {"generic": "g++", "avx2": "g++", "avx512": "g++", "avx512bf16": "g++", "neon": CROSS}  # isa -> compiler


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every target compiling at once, on all cores (about 15 s each, mostly torch's headers): isa -> a future of
    compile_object's result, or None where its compiler is missing here."""
    out = tmp_path_factory.mktemp("objects")
    runnable = {isa: cxx for isa, cxx in TARGETS.items()
                if (X86 or cxx == CROSS) and shutil.which(cxx) and (cxx == CROSS or is_gcc(cxx))}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {isa: pool.submit(compile_object, cxx, isa, out / f"lstm_{isa}.o") for isa, cxx in runnable.items()}
        yield {isa: futures.get(isa) for isa in TARGETS}, out


@pytest.mark.skipif(not X86, reason="x86 instruction sets need an x86 compiler")
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", "avx512bf16"])
def test_lstm_cpp_compiles_for_each_x86_instruction_set(isa, compiled):
    """Every #if branch compiles, whether or not this CPU runs it (the AVX-512 ones cannot be run here)."""
    futures, _ = compiled
    if futures[isa] is None:
        pytest.skip("g++ is missing or is not g++")
    vectorised = futures[isa].result()
    if isa != "generic":  # without SSE4.1, exp_'s floor is a call: x86-64's baseline does not vectorise it
        assert_gate_loops_vectorised(vectorised)


@pytest.mark.skipif(shutil.which(CROSS) is None, reason=f"no {CROSS}: apt-get install g++-aarch64-linux-gnu")
def test_lstm_cpp_compiles_for_aarch64(compiled):
    """Linux on ARM (and Apple Silicon): no x86 intrinsics outside their #if, and the portable loops vectorised
    with NEON. This machine's torch headers serve as they are: they are the same on every architecture."""
    futures, folder = compiled
    assert_gate_loops_vectorised(futures["neon"].result())
    out = folder / "lstm_neon.o"
    header = out.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


# --- every instruction set this CPU runs, built and tested ----------------------------------------------

def below_best() -> list[str]:
    """The x86 sets below this CPU's best, which it runs too (the in-process tests cover the best one)."""
    x86, best = ["avx512bf16", "avx512", "avx2", "generic"], hardware.best_isa()
    return x86[x86.index(best) + 1:] if best in x86 else []


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_lower_instruction_sets_pass_the_native_tests(isa, tmp_path):
    """A library built for a lower set (RECURRENT_NATIVE_ISA) passes the kernel tests, in a child process: one
    process loads one library. On an AVX-512 machine this runs the AVX2 and the portable paths."""
    if isa not in below_best():
        pytest.skip(f"{isa} is not below this CPU's best ({hardware.best_isa()}), which runs in process")
    env = {**os.environ, "RECURRENT_NATIVE_ISA": isa, "RECURRENT_BUILD_DIR": str(tmp_path)}
    env.pop("RECURRENT_NATIVE", None)
    tests = Path(__file__).with_name("test_native_lstm.py")
    code = ("import sys, pytest; from recurrent import native; native.load(); info = native.info(); "
            f"assert info['status'] == 'loaded' and info['isa'] == {isa!r}, info; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(tests)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
