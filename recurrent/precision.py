"""Precision: the one place that decides float32 or bfloat16 for a run, from what was asked and what the device
can do (recurrent.hardware).

    precision = choose("auto", "cpu")    # Precision(name='fp32', requested='auto', reason='this CPU has no ...')
    with precision.autocast("cpu"):     # torch.autocast to bfloat16, or nothing for fp32
        loss = model(x, y).loss

`auto` takes bf16 only where the device multiplies bfloat16 natively (AVX512-BF16 or AMX on a CPU, compute
capability 8.0 or more on a GPU) and fp32 elsewhere. Asking for `bf16` where it is emulated still runs bf16,
correctly, with one warning that fp32 is faster on this machine: never a silent change of dtype.
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from recurrent import hardware
from recurrent.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
HELP = ("auto | fp32 | bf16: auto takes bf16 where the device multiplies bfloat16 natively (AVX512-BF16 or AMX "
        "CPUs, GPUs from Ampere on) and fp32 elsewhere; --bf16 is short for --precision bf16")
_warned: set[str] = set()  # device types already told that bf16 is emulated


@dataclass(frozen=True)
class Precision:
    name: str  # what runs: "fp32" or "bf16"
    requested: str  # what was asked: "auto", "fp32" or "bf16"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def dtype(self) -> torch.dtype | None:
        """The products' dtype where it differs from the weights' float32: torch.bfloat16, or None."""
        return torch.bfloat16 if self.bf16 else None

    def autocast(self, device_type: str):
        """torch.autocast to bfloat16 for a bf16 run; a no-op context for fp32."""
        return torch.autocast(device_type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def to_dict(self) -> dict:
        return {"requested": self.requested, "used": self.name, "reason": self.reason}


def choose(requested: str, device: torch.device | str = "cpu") -> Precision:
    """The precision a run on `device` uses when `requested` ("auto", "fp32" or "bf16") was asked."""
    if requested not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = torch.device(device)
    native, where = hardware.native_bf16(device), _describe(device)
    if requested == "fp32":
        return Precision("fp32", requested, "asked for")
    if requested == "auto":
        if native:
            return Precision("bf16", requested, f"{where} multiplies bfloat16 natively")
        return Precision("fp32", requested, f"{where} has no native bfloat16 products, so fp32 is faster")
    if not native and device.type not in _warned:
        _warned.add(device.type)
        warnings.warn(f"bf16 is emulated on {where}: it runs, with bf16 rounding, but fp32 is faster on this "
                      f"machine (--precision fp32 or auto)", stacklevel=2)
    return Precision("bf16", requested, "asked for" + ("" if native else f"; emulated on {where}"))


def _describe(device: torch.device) -> str:
    if device.type == "cpu":
        return "this CPU" + ("" if hardware.cpu().native_bf16 else " (no AVX512-BF16 or AMX)")
    return f"this {device.type} device"
