"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?"): gates that read x_t only, so training is a
parallel scan over time.

    layer = rc.Recurrent(MinGRUCell, 32, 64, num_layers=2)   # trains as a scan: layer.backend == "scan"
    out, state = layer(x, lengths=lengths)                    # x (B, T, 32) -> out (B, T, 64)
    state = cell(x_t, state)                                  # generation: the same weights, one step at a time

Key: B batch, T time, I input, H hidden.

Both cells are the linear recurrence h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t whose z_t and h̃_t depend on x_t alone.
Over a whole sequence it is h_t = a_t h_{t-1} + b_t with a_t = 1 - z_t > 0 and b_t = z_t h̃_t > 0, which
`log_scan` solves for every t at once in log space (Heinsen 2023, "Efficient parallelization of a ubiquitous
sequential computation"): with A_t = Π_{k≤t} a_k,

    h_t = A_t h_0 + Σ_{k≤t} (A_t / A_k) b_k
    log of the sum = log A_t + logcumsumexp_k(log b_k - log A_k)

On the CPU, where the native library is built, the scan is instead `_NativeScan`: z, h̃ and the recurrence stepped
over T in one C++ loop (recurrent/native/gru.cpp `min_scan_forward`/`_backward`), vectorised over the B·H lanes
and split over threads by lanes. There the lanes already fill the vector units, so stepping does the least work:
the log-space scan made a dozen element-wise passes over (T, B, H) and their backward (its logcumsumexp alone took
28 ms per 256 steps at B=8, H=256). The log-space scan stays the path on GPUs and without the library. Tests check
both against stepping, in float64.

The carried state h_0 (any sign) enters as the linear term A_t h_0, so it need not be positive. The scan runs in
chunks of 256 steps (so float32 keeps its precision on long sequences: log A_t grows like -T). h̃_t = g(pre)
with the paper's g(v) = v + 0.5 for v >= 0, σ(v) otherwise: positive, so log h̃ exists, and
log g(v) = log(v + 0.5) or -softplus(-v). The sequential `step` computes the same quantities without logs, so
`Recurrent` trains on the scan and generation steps the cell; tests check the two agree in float64. The step also
has its hand-derived backward, so `backend="bptt"` runs the sequential recurrence with it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent import kernels, native
from recurrent.cells.base import Cell
from recurrent.state import RNNState

CHUNK = 256  # steps per parallel scan; the chunks run one after another (see log_scan)


def g(v: Tensor) -> Tensor:
    """The paper's positive activation: v + 0.5 for v >= 0, σ(v) otherwise (continuous at 0)."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_g(v: Tensor) -> Tensor:
    """log g(v), computed without forming g(v) for the negative branch."""
    return torch.where(v >= 0, torch.log(F.relu(v) + 0.5), -F.softplus(-v))


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, chunk: int = CHUNK) -> Tensor:
    """Every h_t of h_t = a_t h_{t-1} + b_t, from log a, log b (T, B, H) and h_0 (B, H) -> (T, B, H).

    The scan runs over chunks of `chunk` steps, each from the last h of the one before: within a chunk |log A_t|
    stays bounded, so log A_t + logcumsumexp(...) cancels with float32's relative error times chunk, not times T."""
    out = []
    for start in range(0, log_a.shape[0], chunk):
        log_A = torch.cumsum(log_a[start : start + chunk], 0)  # (t, B, H): log Π_{k≤t} a_k within the chunk
        lse = torch.logcumsumexp(log_b[start : start + chunk] - log_A, 0)
        out.append(torch.exp(log_A) * h0 + torch.exp(log_A + lse))
        h0 = out[-1][-1]
    return torch.cat(out) if len(out) > 1 else out[0]


class _NativeScan(torch.autograd.Function):
    """A min cell's h at every step from its input projection gx (T, B, G) and h_0 (B, H), in C++: the cell's
    `_mix` gives k and pre, the loop gives h (forward) and dk, dpre (backward) in the cell's `_grad_slots` of dgx,
    and `_mix_backward_into` fills the rest of dgx."""

    @staticmethod
    def forward(ctx, cell: "_MinCell", gx: Tensor, h0: Tensor) -> Tensor:
        k, pre = cell._mix(gx)  # (T, B, H) each, read in place through their strides
        h = native.load().min_scan_forward(k, pre, h0)  # (T, B, H)
        ctx.cell = cell
        ctx.save_for_backward(gx, h, h0)
        return h

    @staticmethod
    def backward(ctx, dh: Tensor):
        gx, h, h0 = ctx.saved_tensors
        cell = ctx.cell
        k, pre = cell._mix(gx)
        dgx = torch.empty_like(gx)
        dk, dpre = cell._grad_slots(dgx)  # where the loop writes dk and dpre: into dgx where the cell allows
        dh0 = native.load().min_scan_backward(dh, k, pre, h, h0, dk, dpre)
        cell._mix_backward_into(dgx, dk, dpre, gx)
        return None, dgx, dh0


class _MinCell(Cell):
    """Shared parts: one input projection U x_t + b (G = num_gates * H), state RNNState(h), no matrix W.

    A subclass defines `_mix(gx) -> (z logit k, h̃ pre-activation)`; its update is
        z_t = σ(k),  h̃_t = g(pre),  h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t
    and the scan reads log z = -softplus(-k), log(1 - z) = -softplus(k).
    """

    num_gates = 2
    state_type = RNNState

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__(input_size, hidden_size)
        G = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))  # U, blocks as in _mix
        self.bias_ih = nn.Parameter(torch.empty(G)) if bias else None
        bound = 1.0 / math.sqrt(hidden_size)  # torch.nn's U(-1/sqrt(H), 1/sqrt(H))
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def project_input(self, x: Tensor) -> Tensor:  # (T, B, I) -> (T, B, G)
        return kernels.project(x, self.weight_ih, self.bias_ih)

    def _mix(self, gx: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    # dk and dpre (T, B, H) -> dgx (T, B, G). A subclass says where in dgx they go (`_grad_slots`: the slices of dgx
    # that k or pre read from gx, else scratch) and fills the rest (`_mix_backward_into`); the native scan's backward
    # writes straight into those slots, the sequential step_backward goes through `_mix_backward`.
    def _grad_slots(self, dgx: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _mix_backward_into(self, dgx: Tensor, dk: Tensor, dpre: Tensor, gx: Tensor) -> None:
        raise NotImplementedError

    def _mix_backward(self, dk: Tensor, dpre: Tensor, gx: Tensor) -> Tensor:
        dgx = gx.new_empty(gx.shape)
        k_slot, pre_slot = self._grad_slots(dgx)
        k_slot.copy_(dk), pre_slot.copy_(dpre)
        self._mix_backward_into(dgx, k_slot, pre_slot, gx)
        return dgx

    def step(self, gx: Tensor, gh: None, state: RNNState):  # gx (B, G); no recurrence matrix, so gh is None
        gx = gx.to(state.h.dtype)  # under autocast gx comes in bfloat16; the step runs in the state's dtype
        k, pre = self._mix(gx)
        z, h_tilde = torch.sigmoid(k), g(pre)
        h = torch.lerp(state.h, h_tilde, z)  # (1-z) h_{t-1} + z h̃
        return RNNState(h), (gx, z, h_tilde, state.h)

    def step_backward(self, dstate: RNNState, saved):
        """dz = dh ⊙ (h̃ - h_{t-1}), dk = dz ⊙ z(1-z), dh̃ = dh ⊙ z, dpre = dh̃ ⊙ g'(pre), dh_{t-1} = dh ⊙ (1-z),
        with g'(v) = 1 for v >= 0, σ(v)(1-σ(v)) otherwise; then `_mix_backward` maps dk, dpre to dgx."""
        gx, z, h_tilde, h_prev = saved
        dh = dstate.h
        dk = dh * (h_tilde - h_prev) * z * (1 - z)
        pre = self._mix(gx)[1]
        dpre = dh * z * torch.where(pre >= 0, torch.ones_like(h_tilde), h_tilde * (1 - h_tilde))  # σ' = σ(1-σ)
        return self._mix_backward(dk, dpre, gx), None, RNNState(dh * (1 - z)), ()

    def parallel_scan(self, x: Tensor, state: RNNState) -> tuple[Tensor]:
        """The whole sequence at once: x (T, B, I) from state (B, H) -> (h at every step (T, B, H),)."""
        gx = self.project_input(x)
        if gx.dtype in (torch.float16, torch.bfloat16):  # logcumsumexp needs the range and precision of float32
            gx = gx.float()
        h0 = state.h.to(gx.dtype)
        if gx.device.type == "cpu" and native.load() is not None:  # stepped in C++: the least work on a CPU
            h = _NativeScan.apply(self, gx, h0)
        else:
            k, pre = self._mix(gx)
            h = log_scan(-F.softplus(k), -F.softplus(-k) + log_g(pre), h0)
        return (h.to(state.h.dtype),)


class MinGRUCell(_MinCell):
    """minGRU (Feng et al. 2024, section 3.1, log-space version):

        z_t = σ(U_z x_t + b_z)                       update gate, from x_t only
        h̃_t = g(U_h x_t + b_h)                      candidate, from x_t only
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    U = weight_ih (2H, I) stacks [z; h]; b = bias_ih (2H,). State: RNNState(h) (B, H).
    """

    num_gates = 2

    def _mix(self, gx: Tensor) -> tuple[Tensor, Tensor]:
        H = self.hidden_size
        return gx[..., :H], gx[..., H:]

    def _grad_slots(self, dgx: Tensor) -> tuple[Tensor, Tensor]:  # dk and dpre are dgx's halves, written in place
        H = self.hidden_size
        return dgx[..., :H], dgx[..., H:]

    def _mix_backward_into(self, dgx: Tensor, dk: Tensor, dpre: Tensor, gx: Tensor) -> None:
        pass  # already there


class MinLSTMCell(_MinCell):
    """minLSTM (Feng et al. 2024, section 3.2, with normalised gates, log-space version):

        f_t = σ(U_f x_t + b_f),  i_t = σ(U_i x_t + b_i),  h̃_t = g(U_h x_t + b_h)
        f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)        so f'_t + i'_t = 1
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

    Since i'_t = σ(log i_t - log f_t) with log σ(v) = -softplus(-v), this is the minGRU update with
    z_t = i'_t = σ(softplus(-k_f) - softplus(-k_i)). U = weight_ih (3H, I) stacks [f; i; h]. State: RNNState(h).
    """

    num_gates = 3

    def _mix(self, gx: Tensor) -> tuple[Tensor, Tensor]:
        H = self.hidden_size
        kf, ki, pre = gx[..., :H], gx[..., H : 2 * H], gx[..., 2 * H :]
        return F.softplus(-kf) - F.softplus(-ki), pre  # log i - log f: the logit of i'

    def _grad_slots(self, dgx: Tensor) -> tuple[Tensor, Tensor]:  # dpre is dgx's last third, written in place
        return dgx.new_empty(dgx[..., : self.hidden_size].shape), dgx[..., 2 * self.hidden_size :]

    def _mix_backward_into(self, dgx: Tensor, dk: Tensor, dpre: Tensor, gx: Tensor) -> None:  # softplus' = σ
        H = self.hidden_size
        torch.mul(torch.sigmoid(-gx[..., :H]), dk, out=dgx[..., :H]).neg_()
        torch.mul(torch.sigmoid(-gx[..., H : 2 * H]), dk, out=dgx[..., H : 2 * H])
