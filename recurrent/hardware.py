"""What this machine can do: the one capability probe that every fast path asks.

    >>> from recurrent import hardware
    >>> hardware.cpu().features        # frozenset({'avx2', 'fma', ...}): the instruction sets, from CPUID
    >>> hardware.cpu().native_bf16     # True where the CPU multiplies bfloat16 itself (AVX512-BF16 or AMX)
    >>> hardware.native_isa()          # 'avx512bf16' | 'avx512' | 'avx2' | 'neon' | 'generic': what the C++ builds for

The instruction sets come from torch's cpuinfo (CPUID on x86), not from /proc/cpuinfo, so an emulator such as
`qemu-x86_64 -cpu Haswell` is seen as the CPU it emulates. Nothing else in recurrent probes the CPU: tests
monkeypatch `hardware.cpu` to try the choices of another machine.
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch

# The instruction sets we report and build for, in the names of torch.cpu.get_capabilities() (x86).
X86_FEATURES = ("avx", "avx2", "fma3", "f16c", "avx512_f", "avx512_bw", "avx512_vl", "avx512_dq", "avx512_bf16",
                "avx512_vnni", "avx_ne_convert", "amx_tile", "amx_bf16")
ISAS = ("avx512bf16", "avx512", "avx2", "neon", "generic")  # best first


@dataclass(frozen=True)
class CPU:
    """The CPU as torch sees it."""

    name: str  # the model name, e.g. 'AMD EPYC 9R14'
    arch: str  # platform.machine(): x86_64, aarch64, arm64
    features: frozenset[str]  # instruction sets present, e.g. {'avx2', 'fma3', 'avx512_f', 'avx512_bf16'}
    capability: str  # torch's ATen kernel level: DEFAULT, AVX2, AVX512 (x86); NEON, SVE256 (ARM)
    onednn_bf16: bool  # oneDNN's bfloat16 kernels run here (torch.ops.mkldnn._is_mkldnn_bf16_supported)
    threads: int  # torch's intra-op threads

    @property
    def native_bf16(self) -> bool:
        """True where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX on x86, the BF16 extension on ARM);
        elsewhere bf16 products are emulated through float32 and run slower than float32 itself."""
        return bool({"avx512_bf16", "amx_bf16", "bf16"} & self.features)

    @property
    def avx512(self) -> bool:
        """AVX-512 F, BW, VL and DQ: what torch's AVX512 kernels and ours need."""
        return {"avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"} <= self.features


@functools.cache
def _probe() -> CPU:
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    features = frozenset(k for k, v in caps.items() if v is True)
    if not caps and torch.backends.cpu.get_cpu_capability().startswith("AVX"):  # torch without cpuinfo bindings
        features = frozenset({"avx", "avx2", "fma3"} | ({"avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"}
                              if torch.backends.cpu.get_cpu_capability() == "AVX512" else set()))
    onednn = torch.backends.mkldnn.is_available()
    return CPU(
        name=str(caps.get("cpu_name") or _model_name() or platform.processor() or "unknown"),
        arch=platform.machine().lower(),
        features=features,
        capability=torch.backends.cpu.get_cpu_capability(),
        onednn_bf16=bool(onednn and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        threads=torch.get_num_threads(),
    )


def cpu() -> CPU:
    """This machine's CPU (probed once; `threads` is read again on every call)."""
    probed = _probe()
    if probed.threads == torch.get_num_threads():
        return probed
    return CPU(**{**probed.__dict__, "threads": torch.get_num_threads()})


def _model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


# --- the native kernels: which instruction set to build for --------------------------------------------------

def best_isa(c: CPU | None = None) -> str:
    """The best instruction set the native kernels have a path for on this CPU."""
    c = c or cpu()
    if c.arch in ("x86_64", "amd64"):
        if c.avx512 and "avx512_bf16" in c.features:
            return "avx512bf16"
        if c.avx512:
            return "avx512"
        if {"avx2", "fma3"} <= c.features:
            return "avx2"
        return "generic"
    if c.arch in ("aarch64", "arm64"):
        return "neon"  # Advanced SIMD is part of every ARMv8-A
    return "generic"


def native_isa() -> str:
    """What the native kernels are built for: the best this CPU runs, or a lower one named by
    RECURRENT_NATIVE_ISA (`avx2` measures the AVX2 path on an AVX-512 machine). A level this CPU cannot run
    is a ValueError: a library built for one CPU is never loaded on another."""
    best = best_isa()
    asked = os.environ.get("RECURRENT_NATIVE_ISA", "").strip().lower()
    if not asked or asked == "native":
        return best
    x86 = ("avx512bf16", "avx512", "avx2", "generic")
    runs_here = x86[x86.index(best):] if best in x86 else (best, "generic")
    if asked not in runs_here:
        raise ValueError(f"RECURRENT_NATIVE_ISA={asked!r}: this CPU runs {', '.join(runs_here)}")
    return asked


# g++ flags per instruction set. Never -march=native: the compiler may run on another CPU than the process that
# loads the library (an emulator, a container), and the library's name carries the level it was built for.
COMPILE_FLAGS = {
    "avx512bf16": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                   "-mavx512bf16"],
    "avx512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "neon": [],  # Advanced SIMD is the aarch64 baseline: g++ vectorises with it by default
    "generic": [],
}


# --- devices -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    capability: tuple[int, int]
    memory_gib: float
    native_bf16: bool  # bf16 tensor-core products (compute capability >= 8.0)


def gpus() -> list[GPU]:
    """The CUDA devices torch can use (empty without CUDA)."""
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(GPU(i, p.name, (p.major, p.minor), p.total_memory / 2**30, p.major >= 8))
    return out


def native_bf16(device: torch.device | str) -> bool:
    """True where `device` multiplies bfloat16 natively: the CPU's AVX512-BF16/AMX, or a GPU of compute
    capability 8.0 or more (Ampere and later)."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu().native_bf16
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    return False
