"""The new cells (minGRU, minLSTM, LayerNorm GRU, DT-RNN, DOT-RNN) in the language model: generation's stepper (one
token at a time; minGRU/minLSTM step their weights sequentially) against the full forward (scan or bptt), and
truncated BPTT's carried state continuing the same computation."""
import pytest
import torch

from recurrent.models import LanguageModel, LMConfig
from recurrent.models.lm import Stepper

V = 11
NEW = ["mingru", "minlstm", "lngru", "dtrnn", "dotrnn"]


@pytest.mark.parametrize("cell", NEW)
def test_stepper_logits_equal_the_full_forward_and_the_state_carries(cell):
    torch.manual_seed(3)
    model = LanguageModel(LMConfig(vocab_size=V, cell=cell, hidden_size=16, num_layers=3)).eval()
    seq = torch.randint(V, (2, 9))
    stepper = Stepper(model)
    states = stepper.initial_states(2)
    with torch.no_grad():
        full = model(seq).logits  # (2, 9, V)
        for t in range(9):
            logits, states = stepper.step(seq[:, t], states)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)
        first = model(seq[:, :4])
        second = model(seq[:, 4:], first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), full)
