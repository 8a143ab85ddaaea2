"""minGRU and minLSTM (Feng et al. 2024): one step against the paper's equations written out here, the log-space
parallel scan against the sequential recurrence in float64 (with lengths, a carried state, stacked and
bidirectional), gradcheck through the scan, and the cells by name in models and `recurrent train lm`.

Key: B batch, T time, I input, H hidden.
"""
from __future__ import annotations

import pytest
import torch

import recurrent as rc
from recurrent.cells import MinGRUCell, MinLSTMCell, registry
from recurrent.cli.main import main
from recurrent.engine import run_cell
from recurrent.state import RNNState

B, T, I, H = 3, 7, 3, 4
CELLS = {"mingru": MinGRUCell, "minlstm": MinLSTMCell}


def g(v):
    """The paper's g, written elementwise: v + 1/2 for v >= 0, else 1 / (1 + e^-v)."""
    return torch.where(v >= 0, v + 0.5, 1 / (1 + torch.exp(-v)))


def reference_step(cell, x, h):
    """Feng et al. 2024, sections 3.1 and 3.2 (log-space versions), written out independently of the cell."""
    pre = x @ cell.weight_ih.T + cell.bias_ih
    if isinstance(cell, MinGRUCell):
        k, p = pre.chunk(2, dim=1)
        z = torch.sigmoid(k)
        return (1 - z) * h + z * g(p)
    kf, ki, p = pre.chunk(3, dim=1)
    f, i = torch.sigmoid(kf), torch.sigmoid(ki)
    return f / (f + i) * h + i / (f + i) * g(p)


def sequential(cell, x, h):
    """The recurrence stepped by hand: x (T, B, I), h (B, H) -> (T, B, H)."""
    out = []
    for x_t in x:
        h = reference_step(cell, x_t, h)
        out.append(h)
    return torch.stack(out)


def make(name: str, input_size: int = I) -> torch.nn.Module:
    cell = CELLS[name](input_size, H).double()
    with torch.no_grad():  # wide pre-activations, so that both branches of g and saturated gates occur
        cell.weight_ih.mul_(4)
    return cell


@pytest.mark.parametrize("name", CELLS)
def test_one_step_matches_the_paper(name):
    torch.manual_seed(0)
    cell = make(name)
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    torch.testing.assert_close(cell(x, rc.RNNState(h)).h, reference_step(cell, x, h))


@pytest.mark.parametrize("name", CELLS)
def test_the_scan_equals_the_sequential_recurrence_from_a_carried_state(name):
    torch.manual_seed(1)
    cell = make(name)
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = 3 * torch.randn(B, H, dtype=torch.float64)  # negative entries too: h_0 is not in the log domain
    (scan,) = run_cell(cell, x, rc.RNNState(h0), "scan")
    (loop,) = run_cell(cell, x, rc.RNNState(h0), "autograd")  # the cell's own step, stepped by the engine
    (bptt,) = run_cell(cell, x, rc.RNNState(h0), "bptt")
    for h in (scan, loop, bptt):
        torch.testing.assert_close(h, sequential(cell, x, h0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CELLS)
def test_a_long_sequence_stays_finite_and_exact(name):
    torch.manual_seed(2)
    cell = make(name)
    x = torch.randn(2000, 2, I, dtype=torch.float64)  # log A_t reaches hundreds below zero
    h0 = torch.randn(2, H, dtype=torch.float64)
    (scan,) = run_cell(cell, x, rc.RNNState(h0), "scan")
    assert scan.isfinite().all()
    torch.testing.assert_close(scan, sequential(cell, x, h0), rtol=1e-9, atol=1e-9)


def test_float32_keeps_its_precision_over_long_sequences():
    """The scan runs in chunks: one log-space scan over 3000 steps would lose ~3e-4 to cancellation in float32."""
    torch.manual_seed(6)
    cell = MinGRUCell(I, H)
    x, h0 = torch.randn(3000, 2, I), torch.randn(2, H)
    (scan,) = run_cell(cell, x, rc.RNNState(h0), "scan")
    ref = sequential(cell.double(), x.double(), h0.double())
    torch.testing.assert_close(scan.double(), ref, atol=1e-4, rtol=0)


def test_chunked_log_scan_is_exact_and_passes_gradcheck():
    from recurrent.cells.mingru import log_scan

    torch.manual_seed(7)
    a = torch.rand(7, 2, 3, dtype=torch.float64, requires_grad=True)  # a_t in (0, 1), b_t > 0
    b = torch.rand(7, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h, ref = h0, []
    for t in range(7):
        h = a[t] * h + b[t]
        ref.append(h)
    for chunk in (1, 3, 7, 256):
        torch.testing.assert_close(log_scan(a.log(), b.log(), h0, chunk), torch.stack(ref))
    assert torch.autograd.gradcheck(lambda a, b, h0: log_scan(a.log(), b.log(), h0, 3), (a, b, h0))


@pytest.mark.parametrize("name", CELLS)
def test_native_scan_equals_the_log_space_scan_and_passes_gradcheck(name):
    """The C++ loop (native/gru.cpp min_scan) against the log-space scan in float64, with rows of more than one
    tile of lanes (H = 300 > 256), from a carried state of any sign; its float32 loop (the vectorised one) forward
    and backward against float64 autograd through the log-space scan; and its hand-derived backward against finite
    differences."""
    from recurrent import native
    from recurrent.cells.mingru import log_g, log_scan

    if native.load() is None:
        pytest.skip("the native library is not available here")
    torch.manual_seed(3)
    cell = CELLS[name](5, 300).double()
    x = torch.randn(40, 3, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 300, dtype=torch.float64, requires_grad=True)
    k, pre = cell._mix(cell.project_input(x))
    softplus = torch.nn.functional.softplus
    expected = log_scan(-softplus(k), -softplus(-k) + log_g(pre), h0)
    torch.testing.assert_close(cell.parallel_scan(x, RNNState(h0))[0], expected)
    weights = torch.randn_like(expected)
    grads = torch.autograd.grad((expected * weights).sum(), (x, h0))
    x32, h32 = (t.detach().float().requires_grad_() for t in (x, h0))
    out32 = cell.float().parallel_scan(x32, RNNState(h32))[0]
    torch.testing.assert_close(out32, expected.float(), atol=1e-5, rtol=1e-4)
    grads32 = torch.autograd.grad((out32 * weights.float()).sum(), (x32, h32))
    for got, want in zip(grads32, grads):
        torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)
    small = CELLS[name](3, 4).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h0: small.parallel_scan(x, RNNState(h0))[0], (x, h0))


@pytest.mark.parametrize("name", CELLS)
def test_layer_runs_the_scan_and_matches_stepping_deep_bidirectional_with_lengths(name):
    torch.manual_seed(3)
    layer = rc.Recurrent(CELLS[name], I, H, num_layers=2, bidirectional=True, learnable_init=True).double()
    with torch.no_grad():
        for p in layer.initial.values():
            p.normal_()
    assert layer.backend == "scan" and "parallel scan" in layer.backend.reason
    x, lengths = torch.randn(B, T, I, dtype=torch.float64), torch.tensor([7, 4, 1])
    results = {}
    for backend in ("scan", "autograd", "bptt"):  # from the learned initial state
        layer.backend = backend
        out, final = layer(x, lengths=lengths)
        grads = torch.autograd.grad(out.pow(2).sum() + final.h.sum(), list(layer.parameters()))
        results[backend] = (out, final.h, grads)
    for other in ("autograd", "bptt"):
        for a, b in zip(results["scan"][:2], results[other][:2]):
            torch.testing.assert_close(a, b)
        for a, b in zip(results["scan"][2], results[other][2]):
            torch.testing.assert_close(a, b)
    out, final = results["scan"][:2]
    assert (out[1, 4:] == 0).all() and (out[2, 1:] == 0).all()  # zero past each length

    # each sequence alone, cut to its length, gives the same outputs and final state
    layer.backend = "scan"
    for b, n in enumerate(lengths.tolist()):
        alone, last = layer(x[b : b + 1, :n])
        torch.testing.assert_close(alone[0], out[b, :n])
        torch.testing.assert_close(last.h[:, :, 0], final[:, :, b])


@pytest.mark.parametrize("lengths", [None, [5, 3, 1]])
@pytest.mark.parametrize("backend", ["scan", "bptt"])
@pytest.mark.parametrize("name", CELLS)
def test_scan_and_hand_bptt_pass_gradcheck(name, backend, lengths):
    torch.manual_seed(4)
    cell = make(name)
    x = torch.randn(3, 5, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, H, dtype=torch.float64, requires_grad=True)
    lengths = None if lengths is None else torch.tensor(lengths)

    def run(x, h0, *params):
        out, final = rc.unroll(cell, x, rc.RNNState(h0), lengths, backend=backend)
        return out, final.h

    assert torch.autograd.gradcheck(run, (x, h0, *cell.parameters()))


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("backend", ["scan", "autograd", "bptt"])
def test_bf16_autocast_runs_the_steps_in_float32(name, backend):
    """Under CPU bf16 autocast the projection is bfloat16 and the scan or the steps float32, on every backend (the
    autograd loop's step used to fail: lerp of a float32 state towards a bfloat16 h̃)."""
    torch.manual_seed(5)
    layer = rc.Recurrent(CELLS[name], I, H, backend=backend)
    x = torch.randn(B, T, I)
    ref, _ = layer(x)
    with torch.autocast("cpu", torch.bfloat16):
        out, state = layer(x)
    assert out.dtype == state.h.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)
    out.sum().backward()


def test_forcing_scan_needs_a_cell_with_one():
    with pytest.raises(ValueError, match="backend='scan' needs a cell with parallel_scan.*GRUCell has none"):
        rc.Recurrent(rc.GRUCell, I, H, backend="scan")


@pytest.mark.parametrize("name", CELLS)
def test_by_name_in_models(name):
    from recurrent.data.parallel import collate
    from recurrent.models.classifier import ClassifierConfig, SequenceClassifier
    from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig

    assert registry.cell(name) is CELLS[name]
    layer = registry.layer(name, I, H, num_layers=2, bidirectional=True)
    assert type(layer) is rc.Recurrent and layer.backend == "scan"
    words, lengths = torch.tensor([[3, 4, 5, 6], [7, 3, 0, 0]]), torch.tensor([4, 2])
    clf = SequenceClassifier(ClassifierConfig(vocab_size=8, num_classes=3, cell=name, embedding_size=4,
                                              hidden_size=5, dropout=0.0))
    s2s = Seq2Seq(Seq2SeqConfig(src_vocab_size=8, tgt_vocab_size=9, cell=name, embedding_size=4, hidden_size=6,
                                dropout=0.0))
    pairs = collate([([4, 5, 6], [4, 5]), ([7, 4], [6, 7, 8])], [0, 1])
    loss = clf(words, lengths, torch.tensor([0, 2])).loss + s2s(pairs.src, pairs.src_lengths, pairs.tgt_in,
                                                                 pairs.tgt_out).loss
    loss.backward()
    assert loss.isfinite() and all(p.grad is not None for p in clf.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", CELLS)
def test_train_lm_cli_smoke(name, tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("the cat sat on the mat\n" * 20, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(text), "--out", str(out), "--cell", name, "--max-steps", "3",
                 "--hidden-size", "8", "--no-progress"]) == 0
    assert (out / "model.safetensors").exists()
    assert main(["generate", str(out), "--length", "10", "--seed", "0"]) == 0  # the same weights, stepped
