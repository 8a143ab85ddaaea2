"""Export a layer or a trained model for inference outside Python's eager mode: a torch.export program (.pt2) or
ONNX (.onnx), with dynamic batch and time axes and per-sequence lengths.

    spec = exportable(classifier)                  # the model's inputs and outputs, with example values
    program = export_program(spec)                 # torch.export.ExportedProgram: program.module()(words, lengths)
    export_onnx(spec, "sst.onnx")                  # onnxruntime: session.run(None, {"words": w, "lengths": n})
    check_onnx(spec, "sst.onnx")                   # largest |onnxruntime - eager| on fresh example batches

Key: B batch, T time, I input, H hidden, D directions, V vocab, C classes, K tags.

    what                 inputs                              outputs
    RNN / LSTM / GRU     x (B, T, I) float, lengths (B,)     out (B, T, D*H), h (L, D, B, H)[, c (L, D, B, H)]
    language model       tokens (B, T) int64                 logits (B, T, V)
    classifier           words (B, T) int64, lengths (B,)    logits (B, C)
    tagger               words (B, T) int64, lengths (B,)    emissions (B, T, K)  (a CRF decodes them outside)

How the time loop exports. Under torch.export every recurrent layer, whatever its backend, runs its loop as one
scan over time (`recurrent.engine.scan_cell`): a Python loop over a symbolic T would be unrolled at the example's
length, torch's fused kernels take packed sequences whose batch sizes are data, and the bptt engine's packed
oneDNN weights cannot be graph constants. Lengths are masks (a sequence past its length keeps its state), never
Python ints taken from the lengths' values, so the exported graph has no data-dependent guards. For ONNX, a
built-in RNN/LSTM/GRU layer instead becomes ONNX's own RNN/LSTM/GRU op, one per layer, with the lengths as its
sequence_lens (time-major inside: onnxruntime's CPU LSTM rejects the batch-first layout=1); every other cell
becomes an ONNX Scan. A tagger's CRF decoding and a tree classifier do not export; neither do character encoders
or conditioned language models.

Which ONNX exporter. `torch.onnx.export(..., dynamo=True)`, from the torch.export program, so batch and time stay
dynamic for every cell and both formats come from one torch.export path. The TorchScript exporter (dynamo=False,
deprecated since torch 2.9) traces instead: it cannot trace a scan and unrolls a Python loop at the example's
length (the file then fails at any other T); only torch's fused kernel, which it maps to ONNX's LSTM op, stays
dynamic there.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from recurrent.errors import UserError
from recurrent.layers import Recurrent

FORMATS = ("onnx", "torch-export")
EXAMPLE_B, EXAMPLE_T = 3, 5  # the traced example's sizes; the exported axes stay dynamic


@dataclass
class Exportable:
    """A module in eval mode that takes and returns plain tensors, with example inputs and the dynamic axes."""

    module: nn.Module
    inputs: dict[str, Tensor]  # name -> example value, in the module's argument order
    outputs: list[str]  # the output names, in order
    dynamic: dict[str, dict[int, Dim]]  # name -> {axis: Dim}

    def example(self, B: int, T: int, seed: int = 0) -> dict[str, Tensor]:
        """Fresh inputs of batch B and time T (lengths in 1..T, one of them T), for checking an exported file."""
        g = torch.Generator().manual_seed(seed)
        out = {}
        for name, x in self.inputs.items():
            if name == "lengths":
                n = torch.randint(1, T + 1, (B,), generator=g)
                n[0] = T
                out[name] = n
            elif x.is_floating_point():
                out[name] = torch.randn(B, T, *x.shape[2:], generator=g, dtype=x.dtype)
            else:  # token ids: never 0 (padding) inside a sequence
                out[name] = torch.randint(1, int(x.max()) + 1, (B, T), generator=g)
        return out


class _Layer(nn.Module):
    """layer(x, lengths=lengths) -> (out, *state fields)."""

    def __init__(self, layer: Recurrent):
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        out, state = self.layer(x, lengths=lengths)
        return (out, *state)


class _LM(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens).logits  # (B, T, V)


class _Classifier(_LM):
    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        return self.model(words, lengths).logits  # (B, C)


class _Tagger(_LM):
    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        return self.model(words, lengths).emissions  # (B, T, K)


def exportable(model: nn.Module) -> Exportable:
    """The Exportable of a recurrent layer, a LanguageModel, a SequenceClassifier or a SequenceTagger (set to
    eval mode). UserError for a model that does not export (see the module docstring)."""
    from recurrent.models.classifier import SequenceClassifier
    from recurrent.models.lm import LanguageModel
    from recurrent.models.tagger import SequenceTagger

    B, T = EXAMPLE_B, EXAMPLE_T
    batch, time = Dim("batch", min=1), Dim("time", min=1)
    lengths = torch.tensor([T] + [max(1, T - 2 - i) for i in range(B - 1)])  # (B,): one full, the rest shorter
    ids = {"lengths": {0: batch}}
    model.eval()
    if isinstance(model, Recurrent):
        p = next(model.parameters())
        x = torch.randn(B, T, model.input_size, dtype=p.dtype, device=p.device)
        return Exportable(_Layer(model).eval(), {"x": x, "lengths": lengths}, ["out", *model.state_type._fields],
                          {"x": {0: batch, 1: time}, **ids})
    if isinstance(model, LanguageModel):
        if model.conditioned:
            raise UserError("a conditioned language model does not export: its condition sets the initial state")
        tokens = _tokens(model.config.vocab_size, B, T)
        return Exportable(_LM(model).eval(), {"tokens": tokens}, ["logits"], {"tokens": {0: batch, 1: time}})
    if isinstance(model, SequenceClassifier):
        words = _tokens(model.config.vocab_size, B, T)
        return Exportable(_Classifier(model).eval(), {"words": words, "lengths": lengths}, ["logits"],
                          {"words": {0: batch, 1: time}, **ids})
    if isinstance(model, SequenceTagger):
        if model.chars is not None:
            raise UserError("a tagger with a character encoder does not export: it gathers the valid words, a "
                            "data-dependent shape; train with --char-encoder none to export")
        words = _tokens(model.config.vocab_size, B, T)
        return Exportable(_Tagger(model).eval(), {"words": words, "lengths": lengths}, ["emissions"],
                          {"words": {0: batch, 1: time}, **ids})
    raise UserError(f"cannot export a {type(model).__name__}: export covers RNN/LSTM/GRU layers, language models, "
                    f"sequence classifiers and taggers")


def _tokens(vocab_size: int, B: int, T: int) -> Tensor:
    return torch.randint(1, max(vocab_size, 2), (B, T), generator=torch.Generator().manual_seed(0)) % vocab_size


@torch.no_grad()  # torch 2.13's ONNX decomposition of a scan that tracks gradients fails (SymInt residuals)
def export_program(spec: Exportable) -> torch.export.ExportedProgram:
    """torch.export of the module with dynamic batch and time axes."""
    with _quiet():
        return torch.export.export(spec.module, tuple(spec.inputs.values()), dynamic_shapes=spec.dynamic)


@torch.no_grad()
def export_onnx(spec: Exportable, path, rnn_ops: bool = True) -> Path:
    """Write an ONNX file (torch.onnx's dynamo exporter) whose batch and time axes are dynamic.

    rnn_ops: built-in RNN/LSTM/GRU layers become ONNX's RNN/LSTM/GRU ops (faster in onnxruntime); False, or any
    other cell: the time loop is an ONNX Scan over the cell's step."""
    global ONNX_RNN_OPS
    ONNX_RNN_OPS = rnn_ops
    try:
        program = export_program(spec)
    finally:
        ONNX_RNN_OPS = False
    with _quiet():
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=list(spec.inputs),
                                         output_names=spec.outputs, verbose=False, custom_translation_table={
                                             torch.ops.recurrent.onnx_rnn.default: _onnx_rnn_translation})
    path = Path(path)
    onnx_program.save(path)
    return path


def save_program(spec: Exportable, path) -> Path:
    """Write the torch.export program (load it with torch.export.load(path).module())."""
    path = Path(path)
    torch.export.save(export_program(spec), path)
    return path


def check_onnx(spec: Exportable, path, sizes=((1, 1), (2, 9), (4, 3))) -> float:
    """The largest |onnxruntime - eager| over every output, on fresh inputs of each (B, T) in `sizes`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: not the optimizer's notes on unused initializers
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for B, T in sizes:
        inputs = spec.example(B, T)
        with torch.no_grad():
            expected = spec.module(*inputs.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        worst = max(worst, *(float(abs(g - e.numpy()).max()) for g, e in zip(got, expected)))
    return worst


@contextmanager
def _quiet():
    """torch's own notes, which its exporter triggers and a user cannot act on (deprecations inside torch, and
    'torchvision is not installed')."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
            warnings.filterwarnings("ignore", "The axis name: .* will not be used", UserWarning)
            yield
    finally:
        registration.setLevel(level)


# --- ONNX's own RNN ops for the built-in layers -----------------------------------------------------------------
# In an ONNX export a built-in RNN/LSTM/GRU layer becomes ONNX's RNN/LSTM/GRU op per layer, fed the lengths as its
# sequence_lens, instead of a Scan over pointwise steps: onnxruntime's kernel runs it about 2x faster. In the graph
# it is one custom op, `recurrent::onnx_rnn`, which only the ONNX translation below gives a meaning.

ONNX_RNN_OPS = False  # set while export_onnx traces: built-in layers then call recurrent::onnx_rnn
GATES = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN_TANH": [0], "RNN_RELU": [0]}  # torch's blocks in ONNX's order
# (LSTM: torch i, f, g, o -> ONNX i, o, f, c; GRU: torch r, z, n -> ONNX z, r, h)


@torch.library.custom_op("recurrent::onnx_rnn", mutates_args=())
def onnx_rnn(x: Tensor, lengths: Tensor, W: Tensor, R: Tensor, B: Tensor, h0: Tensor, c0: Tensor, mode: str,
             hidden_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """ONNX's RNN/LSTM/GRU op, time-major: x (T, B, I), lengths (B,), W (D, G, I), R (D, G, H), B (D, 2G),
    h0 and c0 (D, B, H) -> Y (T, D, B, H), Y_h and Y_c (D, B, H). Only ever translated to ONNX, never run."""
    raise RuntimeError("recurrent::onnx_rnn only exists inside an ONNX export (recurrent.export.export_onnx)")


@onnx_rnn.register_fake
def _(x, lengths, W, R, B, h0, c0, mode, hidden_size):
    T, D = x.shape[0], h0.shape[0]
    return x.new_empty(T, D, x.shape[1], hidden_size), h0.new_empty(h0.shape), c0.new_empty(c0.shape)


def _onnx_rnn_translation(x, lengths, W, R, B, h0, c0, mode: str, hidden_size: int):
    from onnxscript import opset18 as op

    D = "bidirectional" if W.shape[0] == 2 else "forward"
    seq = op.Cast(lengths, to=6)  # int32, as ONNX's sequence_lens
    if mode == "LSTM":
        return op.LSTM(x, W, R, B, seq, h0, c0, hidden_size=hidden_size, direction=D)
    if mode == "GRU":  # linear_before_reset: torch's n = tanh(W_n x + b_in + r * (U_n h + b_hn))
        y, yh = op.GRU(x, W, R, B, seq, h0, hidden_size=hidden_size, direction=D, linear_before_reset=1)
    else:
        y, yh = op.RNN(x, W, R, B, seq, h0, hidden_size=hidden_size, direction=D,
                       activations=["Tanh" if mode == "RNN_TANH" else "Relu"] * (2 if D == "bidirectional" else 1))
    return y, yh, op.Identity(c0)


def onnx_layer(layer, x: Tensor, state, lengths: Tensor | None):
    """A built-in layer's forward as ONNX ops: x (B, T, I) -> out (B, T, D*H), state fields (L, D, B, H)."""
    B, T, _ = x.shape
    D, H = layer.num_directions, layer.hidden_size
    lengths = torch.full((B,), T, dtype=torch.long, device=x.device) if lengths is None else lengths
    order = GATES[layer.mode]

    def onnx_order(w: Tensor) -> Tensor:  # (G, ...) in torch's gate order -> ONNX's (slices fold to constants)
        return torch.cat([w[k * H : (k + 1) * H] for k in order])

    inp, finals = x.transpose(0, 1), []  # (T, B, I)
    for l, cells in enumerate(layer.cells):
        W = torch.stack([onnx_order(c.weight_ih) for c in cells])  # (D, G, I)
        R = torch.stack([onnx_order(c.recurrence()[0]) for c in cells])  # (D, G, H)
        if layer.bias:
            Bias = torch.stack([torch.cat([onnx_order(c.bias_ih), onnx_order(c.bias_hh)]) for c in cells])
        else:
            Bias = W.new_zeros(D, 2 * W.shape[1])  # (D, 2G)
        h0 = state.h[l]  # (D, B, H)
        c0 = state.c[l] if len(state) > 1 else h0
        y, yh, yc = onnx_rnn(inp, lengths, W, R, Bias, h0, c0, layer.mode, H)  # y (T, D, B, H)
        inp = y.permute(0, 2, 1, 3).reshape(T, B, D * H)  # (T, B, D*H), zero past each length
        finals.append((yh, yc)[: len(state)])
    out = inp.transpose(0, 1)  # (B, T, D*H)
    return out, layer.state_type(*(torch.stack(f) for f in zip(*finals)))  # each (L, D, B, H)
