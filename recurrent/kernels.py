"""Matrix products with a fixed weight, used inside the BPTT loop.

The recurrence multiplies a small batch (B, H) by the same W at every step, T times forward
and T times backward. On CPU, oneDNN with W pre-packed once per sequence runs these about
1.6x faster than the generic matmul (32x512 @ 512x2048: 0.37 ms vs 0.61 ms on this 2-core
Sapphire Rapids). On CUDA, for float64, or where torch lacks oneDNN, it is a plain addmm:
same results, same code path for the caller.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def uses_onednn(W: Tensor) -> bool:
    return _ONEDNN and W.device.type == "cpu" and W.dtype in (torch.float32, torch.bfloat16)


def linear(W: Tensor, bias: Tensor | None, batch_size: int) -> Callable[[Tensor], Tensor]:
    """x (B, K) -> x Wᵀ + bias (B, N) for a weight W (N, K) that stays fixed over many calls."""
    W = W.detach()
    bias = None if bias is None else bias.detach()
    if not uses_onednn(W):
        if bias is None:
            return lambda x: x @ W.t()
        return lambda x: torch.addmm(bias, x, W.t())
    packed = torch.ops.mkldnn._reorder_linear_weight(W.contiguous(), batch_size)
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
