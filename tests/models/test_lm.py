"""The language model: shapes, weight tying, overfitting, and the stepping path against the full forward."""
import pytest
import torch

import recurrent as rc
from recurrent import native
from recurrent.cells import registry
from recurrent.models import LanguageModel, LMConfig

V = 11


def make(**kw) -> LanguageModel:
    return LanguageModel(LMConfig(vocab_size=V, **{"hidden_size": 16, "num_layers": 2, **kw}))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_shapes_and_state_carry(cell):
    model = make(cell=cell).eval()
    tokens = torch.randint(V, (3, 10))
    whole = model(tokens)
    assert whole.logits.shape == (3, 10, V) and whole.loss is None
    first = model(tokens[:, :4])  # truncated BPTT: the state carried over continues the same computation
    second = model(tokens[:, 4:], first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), whole.logits)


def test_tied_weights_share_one_parameter_and_size_the_last_layer():
    model = make(tie_weights=True, embedding_size=8)
    assert model.decoder.weight is model.embedding.weight
    assert model.layers[-1].hidden_size == 8 and model.layers[0].hidden_size == 16
    n_layers = sum(p.numel() for p in model.layers.parameters())
    assert sum(p.numel() for p in model.parameters()) == V * 8 + n_layers + V  # embedding, layers, decoder bias
    model(torch.randint(V, (2, 5)), targets=torch.randint(V, (2, 5))).loss.backward()
    assert model.embedding.weight.grad is not None  # gets gradient from both uses


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_overfits_one_batch(cell):
    torch.manual_seed(0)
    model = make(cell=cell, hidden_size=32)
    tokens = torch.randint(V, (4, 13))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(tokens[:, :-1], targets=tokens[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()


def test_regularisers_only_act_in_training():
    model = make(dropout=0.5, dropout_input=0.5, dropout_hidden=0.5, dropout_embedding=0.2, weight_drop=0.5,
                 backend="bptt")
    tokens = torch.randint(V, (3, 6))
    model.eval()
    torch.testing.assert_close(model(tokens).logits, model(tokens).logits)
    model.train()
    assert not torch.allclose(model(tokens).logits, model(tokens).logits)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_stepper_matches_the_full_forward(cell):
    """Greedy generation through the stepper = argmax of the full forward run over the growing sequence."""
    torch.manual_seed(1)
    model = make(cell=cell).eval()
    prime = torch.tensor([1, 2, 3])
    generated = list(model.generate(prime, length=6, greedy=True))
    seq = prime.tolist()
    for _ in range(6):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert generated == seq[3:]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_stepper_logits_equal_the_full_forward(cell, dtype):
    """Every step's logits (3 layers: layer 0's table, and the joint [x, h] product above it) match the forward."""
    from recurrent.models.lm import Stepper

    torch.manual_seed(3)
    model = make(cell=cell, num_layers=3).eval()
    seq = torch.randint(V, (2, 9))
    stepper = Stepper(model, dtype)
    states = stepper.initial_states(2)
    with torch.no_grad():
        full = model(seq).logits  # (2, 9, V)
        for t in range(9):
            logits, states = stepper.step(seq[:, t], states)
            tol = 1e-5 if dtype is None else 0.05
            torch.testing.assert_close(logits, full[:, t], atol=tol, rtol=tol)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_stepper_restarts_a_row_at_the_reset_token_as_the_forward_does(cell):
    """reset_id (train lm --reset-at): each row's state restarts before every reset token, in generation as in
    training's forward pass; the rows without one carry on. Checked against the forward at every step."""
    from recurrent.models.lm import Stepper

    torch.manual_seed(5)
    model = make(cell=cell, reset_id=0).eval()
    seq = torch.randint(1, V, (3, 12))
    seq[0, 4] = seq[0, 9] = seq[2, 7] = 0  # documents start there; row 1 has none
    stepper = Stepper(model)
    states = stepper.initial_states(3)
    with torch.no_grad():
        full = model(seq).logits  # (3, 12, V)
        plain = make(cell=cell).eval()
        plain.load_state_dict(model.state_dict())
        carried = plain(seq).logits  # the same weights without resets
        torch.testing.assert_close(carried[1], full[1], atol=1e-5, rtol=1e-5)  # row 1 has no reset token
        assert not torch.allclose(carried[0, 4:], full[0, 4:], atol=1e-3)
        for t in range(12):
            logits, states = stepper.step(seq[:, t], states)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


def test_zoneout_regularises_training_and_generation_steps_its_expectation():
    """LMConfig.zoneout (train lm --zoneout): the layers are ZoneoutCells; in eval the stepper's logits equal the
    forward's (both the expectation p s_{t-1} + (1 - p) s_t), and training draws masks (two passes differ)."""
    from recurrent.cells import ZoneoutCell
    from recurrent.models.lm import Stepper

    torch.manual_seed(2)
    model = make(zoneout=0.3)
    assert all(isinstance(layer.cells[0][0], ZoneoutCell) for layer in model.layers)
    seq = torch.randint(V, (2, 7))
    assert not torch.equal(model(seq).logits, model(seq).logits)  # training: a fresh mask per pass
    model.eval()
    stepper = Stepper(model)
    states = stepper.initial_states(2)
    with torch.no_grad():
        full = model(seq).logits
        for t in range(7):
            logits, states = stepper.step(seq[:, t], states)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


def test_a_long_prime_runs_in_one_pass_and_gives_the_same_text_as_stepping_it():
    from recurrent.models import lm

    torch.manual_seed(4)
    model = make().eval()
    prime = torch.randint(V, (lm.PRIME_PASS_MIN + 5,))
    stepped = list(model.generate(prime[-lm.PRIME_PASS_MIN:], 0))  # nothing to yield: just exercise the path
    assert stepped == []
    one_pass = list(model.generate(prime, 12, greedy=True))
    seq = prime.tolist()
    for _ in range(12):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert one_pass == seq[len(prime):]


def test_generation_is_deterministic_with_a_seed_and_respects_top_k():
    model = make().eval()
    prime = torch.tensor([0, 1])
    runs = [list(model.generate(prime, 40, temperature=1.5, top_k=3, generator=torch.Generator().manual_seed(5)))
            for _ in range(2)]
    assert runs[0] == runs[1]
    # top-k: every sampled token is among the 3 most likely at its step (replayed with the full forward)
    seq = prime.tolist()
    for token in runs[0]:
        top3 = model(torch.tensor([seq])).logits[0, -1].topk(3).indices.tolist()
        assert token in top3
        seq.append(token)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_every_registered_cell_builds_its_layers(cell):
    model = make(cell=cell)
    assert all(type(layer.cells[0][0]) is registry.cell(cell) for layer in model.layers)


def test_a_registered_cell_trains_for_a_step(cells_doc, monkeypatch):
    """rc.register_cell is all it takes: LMConfig(cell=name) and `--cell name` build layers of it."""
    from recurrent.cli.main import build_parser

    monkeypatch.setattr(registry, "CELLS", dict(registry.CELLS))  # restored after the test
    rc.register_cell("indrnn", cells_doc["IndRNNCell"])
    assert build_parser().parse_args(["train", "lm", "--cell", "indrnn"]).cell == "indrnn"
    model = make(cell="indrnn")
    assert type(model.layers[0]) is rc.Recurrent and model.layers[0].backend == "bptt"
    tokens = torch.randint(V, (4, 9))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        loss = model(tokens[:, :-1], targets=tokens[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]


def test_bad_config():
    with pytest.raises(ValueError, match="cell must be one of"):
        make(cell="transformer")
    with pytest.raises(ValueError, match="vocab_size must be >= 1, got 0"):
        LanguageModel(LMConfig(vocab_size=0))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bf16_stepper_stays_close_to_float32(cell):
    from recurrent.models.lm import Stepper

    torch.manual_seed(2)
    model = make(cell=cell, hidden_size=32).eval()
    out = model(torch.tensor([[1, 2, 3]]))
    states = {dtype: Stepper.from_layer_states(out.state) for dtype in (None, torch.bfloat16)}
    steppers = {dtype: Stepper(model, dtype) for dtype in states}
    with torch.no_grad():
        for token in [4, 5, 6, 7]:
            logits = {}
            for dtype, stepper in steppers.items():
                logits[dtype], states[dtype] = stepper.step(torch.tensor([token]), states[dtype])
            assert logits[torch.bfloat16].dtype == torch.float32
            torch.testing.assert_close(logits[torch.bfloat16], logits[None], atol=0.05, rtol=0.05)
            assert not torch.equal(logits[torch.bfloat16], logits[None])  # it really ran in bfloat16


def test_stepper_is_kept_between_generate_calls_until_a_parameter_changes():
    torch.manual_seed(5)
    model = make().eval()
    prime = torch.tensor([1, 2])
    first = list(model.generate(prime, 8, greedy=True))
    stepper, bf16 = model.stepper(), model.stepper(torch.bfloat16)
    assert bf16 is not stepper and model.stepper() is stepper and model.stepper(torch.bfloat16) is bf16  # one each
    with torch.no_grad():
        model.decoder.bias.add_(torch.arange(V, dtype=torch.float) * 100.0)  # in place: makes the last token win
    assert model.stepper() is not stepper
    assert list(model.generate(prime, 8, greedy=True)) == [V - 1] * 8 != first


needs_native = pytest.mark.skipif(native.load() is None, reason=f"native kernels unavailable: {native.status()}")


@needs_native
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "lnlstm"])
def test_the_stepper_runs_plain_lstms_natively_and_nothing_else(cell, monkeypatch):
    from recurrent.native.step import NativeStep

    torch.manual_seed(6)
    model = make(cell=cell).eval()
    calls = []
    real_step = NativeStep.step
    monkeypatch.setattr(NativeStep, "step", lambda self, *a: calls.append(1) or real_step(self, *a))
    list(model.generate(torch.tensor([1, 2]), 5))
    assert (model.stepper().native is not None) == (cell == "lstm")
    assert len(calls) == (2 + 5 if cell == "lstm" else 0)  # every prime token and every new one (the last too)


@needs_native
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("kw", [{"num_layers": 3}, {"tie_weights": True, "embedding_size": 12}])
def test_the_native_step_equals_the_python_step(dtype, kw):
    """The same logits and states as the Python path (bfloat16: its products round their outputs, ours do not),
    at batch 2 and 1 (the matrix-vector kernel) and over the kernel's max_batch (lm_step_onednn, where oneDNN runs
    the products' dtype), from a carried state, and the same samples in float32."""
    from recurrent import kernels
    from recurrent.models.lm import Stepper

    torch.manual_seed(7)
    model = make(**kw).eval()
    native_path, python_path = Stepper(model, dtype), Stepper(model, dtype)
    python_path.native = None
    assert native_path.native is not None
    large = native_path.native.max_batch + 3
    onednn = kernels.uses_onednn(torch.zeros(1, dtype=dtype or torch.float32))
    assert native_path.native.takes(torch.zeros(large, dtype=torch.long), native_path.initial_states(large)) == onednn
    tol = 1e-5 if dtype is None else 0.05
    with torch.no_grad():
        for batch in (2, 1, large):
            states = [Stepper.from_layer_states(model(torch.randint(V, (batch, 5))).state)] * 2
            for token in torch.randint(V, (4, batch)):
                (a, states[0]), (b, states[1]) = native_path.step(token, states[0]), python_path.step(token, states[1])
                torch.testing.assert_close(a, b, atol=tol, rtol=tol)
                for s, t in zip(*states):
                    torch.testing.assert_close(s.h, t.h, atol=tol, rtol=tol)
                    torch.testing.assert_close(s.c, t.c, atol=tol, rtol=tol)
    if dtype is None:
        runs = []
        for path in (native_path, python_path):
            model.stepper = lambda dtype, path=path: path  # generate steps with this one
            runs.append(list(model.generate(torch.tensor([1, 2]), 60, generator=torch.Generator().manual_seed(8))))
        assert runs[0] == runs[1]
