"""A whole LSTM language-model step in C++ (lstm.cpp `lm_step`): the Stepper's fast path for generation.

At batch 1 a token costs a few matrix-vector products whose weights no core's cache holds, plus about a dozen
torch calls per layer from Python (LSTMCell.step), each a few microseconds. Here one call runs every layer
(layer 0's table row + W_hh h, the joint [x, h] [U W]ᵀ above it, the fused gates) and the decoder, on weights
packed once for a matrix-vector product (float32, or bfloat16 with float32 sums: vdpbf16ps with AVX512-BF16,
widened to float32 elsewhere), with the products split over two cores when torch has two threads or more. Same
equations as LSTMCell.step; states stay float32. Over the kernel's max_batch, where oneDNN's products win
(matrix-matrix now, not matrix-vector), `lm_step_onednn` runs the same step with them: still one call, the gates in
C++ rather than a dozen torch ops per layer.
Key: B batch, V vocab, H hidden, G = 4H.
"""
from __future__ import annotations

import torch
from torch import Tensor

from recurrent import hardware, kernels, native
from recurrent.state import LSTMState

MAX_BATCH = 8  # rows one at a time (AVX2, NEON): at 2x512, faster than oneDNN up to 8 rows, even at 16
# AVX-512 runs rows three at a time, each weight load serving three (lstm.cpp `rows`, `tiled`). Measured at
# 2x512 on 2 cores (Zen 4), tokens/s of the step: bfloat16 products 12.9k at batch 1, 48k at 32 and 54k at 64,
# where oneDNN's path gives 38k and 42k; float32 25k at 32 against oneDNN's 29k, so float32 stops at 16.
TILED_MAX_BATCH = {torch.bfloat16: 64, torch.float32: 16}
# With AMX (Sapphire Rapids on), oneDNN's bfloat16 products run on the tile unit and overtake the kernel from 16
# rows. Over max_batch the step runs lm_step_onednn: the same native step with oneDNN's products. Measured at 2x512
# on 2 cores (Xeon with AMX), tokens/s of the step, kernel / lm_step_onednn / the Python step: bfloat16 21.0k /
# 20.9k / 14.1k at 8, 22.1k / 36.7k / 23.7k at 16, 23.7k / 55.1k / 41.4k at 32, 24.3k / 78.9k / 58.1k at 64;
# float32 17.6k / 16.1k / 15.1k at 16, 20.5k / 24.1k / 19.0k at 32 (so float32 keeps 16).
AMX_MAX_BATCH = 8


def max_batch(dtype: torch.dtype | None) -> int:
    """The largest batch the kernel runs faster than the Python step (oneDNN products) for these products."""
    isa, low = native.info()["isa"], dtype or torch.float32
    if low is torch.bfloat16 and "amx_bf16" in hardware.cpu().features:
        return AMX_MAX_BATCH
    tiled = isa == "avx512bf16" or (isa == "avx512" and low is torch.float32)
    return TILED_MAX_BATCH[low] if tiled else MAX_BATCH


class NativeStep:
    """Weights packed once; then `step(token, states)` is one native call for the whole model.

    For plain LSTMCells on CPU in float32, products in float32 or bfloat16, with layer 0's input table built and
    the native library loaded: `recurrent.backends.choose_step` says when."""

    def __init__(self, cells: list, table: Tensor, decoder: torch.nn.Linear, dtype: torch.dtype | None):
        ops, low = native.load(), dtype or torch.float32
        self.table = table.detach().contiguous()  # (V, G0): U e_v + b_ih for every token v
        self.weights, self.biases, self.parts, self.low = [], [], [], low
        for l, cell in enumerate(cells):
            W, b_hh = cell.recurrence()
            zeros = W.new_zeros(W.shape[0])
            if l == 0:  # gx comes from the table, which holds b_ih
                parts, bias = [W], zeros if b_hh is None else b_hh
            else:  # one product: [x, h] [U W]ᵀ + b_ih + b_hh
                parts, bias = [cell.weight_ih, W], zeros if cell.bias_ih is None else cell.bias_ih + b_hh
            self.weights.append(ops.gemv_pack([p.detach() for p in parts], low))  # (G, I + H), packed
            self.parts.append(parts)
            self.biases.append(bias.detach().float().contiguous())
        dec_b = decoder.bias if decoder.bias is not None else decoder.weight.new_zeros(decoder.out_features)
        self.dec_P = ops.gemv_pack([decoder.weight.detach()], torch.float32)  # small: float32, as the Python path
        self.dec_b = dec_b.detach().float().contiguous()
        self.dec_W = decoder.weight.detach().float().contiguous()
        self.op, self.op_onednn = ops.lm_step, ops.lm_step_onednn
        self.max_batch = max_batch(dtype)
        self._onednn = None  # the weights packed for oneDNN, on the first batch over max_batch

    def takes(self, token: Tensor, states: list) -> bool:
        """True for the inputs the kernels run: tokens (B,) on CPU, float32 CPU states, and B <= max_batch, or
        any B where oneDNN runs the products' dtype."""
        return (token.is_cpu and token.dim() == 1 and 0 < len(token)
                and (len(token) <= self.max_batch or self.onednn is not None)
                and all(s.h.dtype is s.c.dtype is torch.float32 and s.h.is_cpu and s.c.is_cpu for s in states))

    @property
    def onednn(self) -> list | None:
        """Each layer's weight ([U W] above layer 0) in the products' dtype, packed for oneDNN as kernels.linear
        packs it; None where oneDNN does not run that dtype here."""
        if self._onednn is None:
            W = [torch.cat([p.detach() for p in parts], 1).to(self.low) for parts in self.parts]
            self._onednn = [kernels.pack(w, 1) for w in W] if kernels.uses_onednn(W[0]) else []
        return self._onednn or None

    def step(self, token: Tensor, states: list) -> tuple[Tensor, list]:
        """token (B,) -> logits (B, V) and the new LSTMStates, each field (B, H). Up to max_batch rows, the
        matrix-vector kernel; above, the same step with oneDNN's products."""
        h, c = [s.h for s in states], [s.c for s in states]
        if len(token) <= self.max_batch:
            logits, h, c = self.op(self.table, token, self.weights, self.biases, h, c, self.dec_P, self.dec_b,
                                   torch.get_num_threads())
        else:
            logits, h, c = self.op_onednn(self.table, token, self.onednn, self.biases, h, c, self.dec_W, self.dec_b)
        return logits, [LSTMState(*s) for s in zip(h, c)]
