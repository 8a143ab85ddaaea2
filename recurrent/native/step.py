"""A whole LSTM language-model step in C++ (lstm.cpp `lm_step`): the Stepper's fast path for generation.

At batch 1 a token costs a few matrix-vector products whose weights no core's cache holds, plus about a dozen
torch calls per layer from Python (LSTMCell.step), each a few microseconds. Here one call runs every layer
(layer 0's table row + W_hh h, the joint [x, h] [U W]ᵀ above it, the fused gates) and the decoder, on weights
packed once for a matrix-vector product (float32, or bfloat16 with float32 sums: vdpbf16ps with AVX512-BF16,
widened to float32 elsewhere), with the products split over two cores when torch has two threads or more. Same
equations as LSTMCell.step; states stay float32.
Key: B batch, V vocab, H hidden, G = 4H.
"""
from __future__ import annotations

import torch
from torch import Tensor

from recurrent import native
from recurrent.state import LSTMState

MAX_BATCH = 8  # rows one at a time (AVX2, NEON): at 2x512, faster than oneDNN up to 8 rows, even at 16
# AVX-512 runs rows three at a time, each weight load serving three (lstm.cpp `rows`, `tiled`). Measured at
# 2x512 on 2 cores (Zen 4), tokens/s of the step: bfloat16 products 12.9k at batch 1, 48k at 32 and 54k at 64,
# where oneDNN's path gives 38k and 42k; float32 25k at 32 against oneDNN's 29k, so float32 stops at 16.
TILED_MAX_BATCH = {torch.bfloat16: 64, torch.float32: 16}


def max_batch(dtype: torch.dtype | None) -> int:
    """The largest batch the kernel runs faster than the Python step (oneDNN products) for these products."""
    isa, low = native.info()["isa"], dtype or torch.float32
    tiled = isa == "avx512bf16" or (isa == "avx512" and low is torch.float32)
    return TILED_MAX_BATCH[low] if tiled else MAX_BATCH


class NativeStep:
    """Weights packed once; then `step(token, states)` is one native call for the whole model.

    For plain LSTMCells on CPU in float32, products in float32 or bfloat16, with layer 0's input table built and
    the native library loaded: `recurrent.backends.choose_step` says when."""

    def __init__(self, cells: list, table: Tensor, decoder: torch.nn.Linear, dtype: torch.dtype | None):
        ops, low = native.load(), dtype or torch.float32
        self.table = table.detach().contiguous()  # (V, G0): U e_v + b_ih for every token v
        self.weights, self.biases = [], []
        for l, cell in enumerate(cells):
            W, b_hh = cell.recurrence()
            zeros = W.new_zeros(W.shape[0])
            if l == 0:  # gx comes from the table, which holds b_ih
                parts, bias = [W], zeros if b_hh is None else b_hh
            else:  # one product: [x, h] [U W]ᵀ + b_ih + b_hh
                parts, bias = [cell.weight_ih, W], zeros if cell.bias_ih is None else cell.bias_ih + b_hh
            self.weights.append(ops.gemv_pack([p.detach() for p in parts], low))  # (G, I + H), packed
            self.biases.append(bias.detach().float().contiguous())
        dec_b = decoder.bias if decoder.bias is not None else decoder.weight.new_zeros(decoder.out_features)
        self.dec_P = ops.gemv_pack([decoder.weight.detach()], torch.float32)  # small: float32, as the Python path
        self.dec_b = dec_b.detach().float().contiguous()
        self.op = ops.lm_step
        self.max_batch = max_batch(dtype)

    def takes(self, token: Tensor, states: list) -> bool:
        """True for the inputs the kernel runs: tokens (B,) on CPU with B <= max_batch, float32 CPU states."""
        return (token.is_cpu and token.dim() == 1 and 0 < len(token) <= self.max_batch
                and all(s.h.dtype is s.c.dtype is torch.float32 and s.h.is_cpu and s.c.is_cpu for s in states))

    def step(self, token: Tensor, states: list) -> tuple[Tensor, list]:
        """token (B,) -> logits (B, V) and the new LSTMStates, each field (B, H)."""
        logits, h, c = self.op(
            self.table, token, self.weights, self.biases, [s.h for s in states], [s.c for s in states],
            self.dec_P, self.dec_b, torch.get_num_threads())
        return logits, [LSTMState(*s) for s in zip(h, c)]
