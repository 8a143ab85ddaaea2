"""Zoneout (Krueger et al. 2017): eval mode against the written-out expectation, training against a mask drawn by
hand from the same seed, in a layer and from the registry.

Key: B batch, T time, I input, H hidden.
"""
from functools import partial

import pytest
import torch

import recurrent as rc
from recurrent.cells import ZoneoutCell, registry

B, T, I, H = 3, 5, 3, 4


def make(inner, p=0.3, p_c=None):
    torch.manual_seed(0)
    return ZoneoutCell(I, H, cell=inner, p=p, p_c=p_c).double()


def states(cell):
    return cell.state_type(*(torch.randn(B, H, dtype=torch.float64) for _ in cell.state_type._fields))


@pytest.mark.parametrize("inner", [rc.LSTMCell, rc.GRUCell])
def test_eval_is_the_expectation(inner):
    cell = make(inner, p=0.3, p_c=0.6).eval()
    x, state = torch.randn(B, I, dtype=torch.float64), states(cell)
    new = cell.cell(x, state)  # the inner step, no zoneout
    rates = {"h": 0.3, "c": 0.6}
    for name, ours, prev, now in zip(state._fields, cell(x, state), state, new):
        p = rates[name]
        torch.testing.assert_close(ours, p * prev + (1 - p) * now)


@pytest.mark.parametrize("inner", [rc.LSTMCell, rc.GRUCell])
def test_training_keeps_units_by_a_hand_drawn_mask(inner):
    cell = make(inner, p=0.3, p_c=0.6).train()
    x, state = torch.randn(B, I, dtype=torch.float64), states(cell)
    torch.manual_seed(7)
    ours = cell(x, state)
    torch.manual_seed(7)  # the same draws: one uniform (B, H) per field, in field order (h, then c)
    new = cell.cell(x, state)
    rates = {"h": 0.3, "c": 0.6}
    kept = []
    for name, o, prev, now in zip(state._fields, ours, state, new):
        keep = torch.rand(B, H, dtype=torch.float64) < rates[name]
        torch.testing.assert_close(o, torch.where(keep, prev, now))
        kept.append(keep)
    assert all(k.any() and not k.all() for k in kept)  # the masks are neither all on nor all off here


def test_the_masks_differ_per_step_and_per_field_and_average_to_p():
    cell = make(rc.LSTMCell, p=0.25).train()
    x, state = torch.randn(4000, I, dtype=torch.float64), states(make(rc.LSTMCell))
    state = cell.state_type(*(s.repeat(4000 // B + 1, 1)[:4000] for s in state))
    new, ours = cell.cell(x, state), cell(x, state)
    kept = [(o == p) & (o != n) for o, p, n in zip(ours, state, new)]  # kept and visibly so
    assert not torch.equal(kept[0], kept[1])  # h and c have their own masks
    for k in kept:
        assert abs(k.double().mean().item() - 0.25) < 0.02


def test_in_a_layer_and_by_name():
    layer = registry.layer("lstm", I, H, num_layers=2, bidirectional=True, zoneout=0.2).double()
    assert type(layer) is rc.Recurrent and isinstance(layer.cells[1][1], ZoneoutCell)
    assert layer.cells[0][0].rates == (0.2, 0.2) and layer.backend == "autograd"
    x, lengths = torch.randn(B, T, I, dtype=torch.float64), torch.tensor([5, 3, 1])
    layer.train()
    out, _ = layer(x, lengths=lengths)
    out.sum().backward()
    assert out.shape == (B, T, 2 * H) and (out[2, 1:] == 0).all()

    # in eval mode a zero rate is the plain cell, with the same weights
    plain = rc.Recurrent(partial(ZoneoutCell, cell=rc.GRUCell, p=0.0), I, H).double().eval()
    ref = rc.Recurrent(rc.GRUCell, I, H).double()
    ref.load_state_dict({k.replace(".cell.", "."): v for k, v in plain.state_dict().items()})  # cells.0.0.cell.w
    torch.testing.assert_close(plain(x)[0], ref(x)[0])


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match=r"zoneout p must be in \[0, 1\), got 1.0"):
        ZoneoutCell(I, H, p=1.0)
    with pytest.raises(ValueError, match=r"zoneout p_c must be in \[0, 1\), got -0.1"):
        ZoneoutCell(I, H, p=0.1, p_c=-0.1)
