"""Matrix products with a fixed weight, used inside the BPTT loop.

The recurrence multiplies a small batch (B, H) by the same W at every step, T times forward
and T times backward. On CPU, oneDNN with W pre-packed once per sequence runs these about
1.6x faster than the generic matmul (32x512 @ 512x2048: 0.37 ms vs 0.61 ms on this 2-core
CPU). On CUDA, for float64, or where torch lacks oneDNN, it is a plain addmm:
same results, same code path for the caller.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from recurrent import hardware

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def uses_onednn(W: Tensor) -> bool:
    """True if products with W go through oneDNN: float32 on any CPU, bfloat16 only where oneDNN's bf16 kernels
    run (AVX-512 or AVX-NE-CONVERT); elsewhere a bf16 product is torch's plain matmul, emulated but correct."""
    if not (_ONEDNN and W.device.type == "cpu") or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False  # in a graph (torch.compile, torch.export, a TorchScript trace such as torch.onnx.export's with
        # dynamo=False) a packed weight cannot be a constant: plain products there
    return W.dtype == torch.float32 or (W.dtype == torch.bfloat16 and hardware.cpu().onednn_bf16)


def linear(W: Tensor, bias: Tensor | None, batch_size: int,
           io_dtype: torch.dtype | None = None) -> Callable[[Tensor], Tensor]:
    """x (B, K) -> x Wᵀ + bias (B, N) for a weight W (N, K) that stays fixed over many calls.

    io_dtype: the dtype x comes in and the result goes out in, when W is kept in another (a float32 model with
    bfloat16 products: x is cast to W's dtype before the product and the result back after it)."""
    product = _linear(W.detach(), None if bias is None else bias.detach(), batch_size)
    if io_dtype is None or io_dtype == W.dtype:
        return product
    return lambda x: product(x.to(W.dtype)).to(io_dtype)


def pack(W: Tensor, batch_size: int) -> Tensor:
    """W (N, K) in oneDNN's layout for products with `batch_size` rows (only where `uses_onednn(W)`)."""
    return torch.ops.mkldnn._reorder_linear_weight(W.contiguous(), batch_size)


def _linear(W: Tensor, bias: Tensor | None, batch_size: int) -> Callable[[Tensor], Tensor]:
    if not uses_onednn(W):
        if bias is None:
            return lambda x: x @ W.t()
        return lambda x: torch.addmm(bias, x, W.t())
    packed = pack(W, batch_size)
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class _PackedLinear(torch.autograd.Function):
    """y = x Wᵀ + b with oneDNN products forward and backward (dx = dy W); dW = dyᵀ x is one matmul."""

    @staticmethod
    def forward(ctx, x: Tensor, W: Tensor, bias: Tensor | None) -> Tensor:  # x (M, K), W (N, K) -> (M, N)
        ctx.save_for_backward(x, W)
        ctx.has_bias = bias is not None
        return linear(W, bias, x.shape[0])(x)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, W = ctx.saved_tensors
        dx = linear(W.t(), None, dy.shape[0])(dy) if ctx.needs_input_grad[0] else None  # (M, K)
        dW = dy.t() @ x if ctx.needs_input_grad[1] else None  # (N, K)
        db = dy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dW, db


PACK_MIN_ROWS = 256  # packing W costs about one (256, K) product; below that, plain F.linear is faster


def project(x: Tensor, W: Tensor, bias: Tensor | None) -> Tensor:
    """F.linear(x, W, bias) for x (..., K); on CPU float32/bfloat16 through oneDNN, forward and backward."""
    if (not uses_onednn(W) or x.dtype != W.dtype or x.numel() < PACK_MIN_ROWS * x.shape[-1]
            or torch.is_autocast_enabled(x.device.type)):  # autocast casts F.linear to bfloat16
        return torch.nn.functional.linear(x, W, bias)
    y = _PackedLinear.apply(x.reshape(-1, x.shape[-1]), W, bias)  # (M, N)
    return y.view(*x.shape[:-1], W.shape[0])
