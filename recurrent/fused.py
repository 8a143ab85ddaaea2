"""The `fused` backend: torch's own multi-layer kernels (oneDNN on CPU, cuDNN on CUDA).

These are the very calls torch.nn.RNN/LSTM/GRU make, fed with our cells' parameters,
so a fused layer runs at torch.nn's speed. Variable lengths go through a packed
sequence internally; callers never see it.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

KERNELS = {"LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}


def fused_forward(mode: str, x: Tensor, hx: tuple[Tensor, ...], weights: list[Tensor], bias: bool,
                  num_layers: int, dropout: float, training: bool, bidirectional: bool,
                  lengths: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """x (B, T, I), hx fields (L*D, B, H) -> out (B, T, D*H), final fields (L*D, B, H).

    Under torch.compile the kernel runs eagerly, outside the graph (a graph break, as torch.compile does for
    torch.nn.LSTM): dynamo cannot trace torch's fused RNN ops."""
    if torch.compiler.is_compiling():
        return _eager(mode, x, hx, weights, bias, num_layers, dropout, training, bidirectional, lengths)
    kernel = KERNELS[mode]
    hx_arg = hx if mode == "LSTM" else hx[0]
    if lengths is None:
        out, *final = kernel(x, hx_arg, weights, bias, num_layers, dropout, training, bidirectional, True)
        return out, tuple(final)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    order, unorder = packed.sorted_indices, packed.unsorted_indices
    hx_sorted = tuple(h.index_select(1, order) for h in hx)
    hx_arg = hx_sorted if mode == "LSTM" else hx_sorted[0]
    data, *final = kernel(packed.data, packed.batch_sizes, hx_arg, weights, bias, num_layers, dropout,
                          training, bidirectional)
    out = PackedSequence(data, packed.batch_sizes, order, unorder)
    out = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]  # (B, T, D*H)
    return out, tuple(h.index_select(1, unorder) for h in final)


_eager = torch.compiler.disable(fused_forward, reason="torch's fused RNN kernels run outside a compiled graph")
