"""The registry of cells: its contents, every model built from each name it supports, a cell registered by a user
(usable by name in the models and by `--cell` on the command line), tree names with the old 'elman', the errors."""
from __future__ import annotations

import pytest
import torch

import recurrent as rc
from recurrent.cells import registry
from recurrent.cells.tree import BinaryTreeLSTMCell, TreeRNNCell
from recurrent.cli.main import build_parser
from recurrent.data.parallel import collate
from recurrent.models.classifier import ClassifierConfig, SequenceClassifier
from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig
from recurrent.models.tagger import SequenceTagger, TaggerConfig
from recurrent.models.tree import TreeClassifier
from recurrent.tasks.memory import MemoryModel

BUILT_IN = ["rnn", "lstm", "gru", "lnlstm", "lngru", "mingru", "minlstm", "dtrnn", "dotrnn"]
WORDS = torch.tensor([[3, 4, 5, 6], [7, 3, 0, 0]])  # (B, T), 0 = padding
LENGTHS = torch.tensor([4, 2])


@pytest.fixture
def indrnn(cells_doc, monkeypatch):
    """docs/cells.md's IndRNNCell registered as 'indrnn' for one test (the registry is restored after it)."""
    monkeypatch.setattr(registry, "CELLS", dict(registry.CELLS))
    rc.register_cell("indrnn", cells_doc["IndRNNCell"], help="IndRNN (Li et al. 2018)")
    return cells_doc["IndRNNCell"]


def test_the_built_in_names_and_what_a_layer_of_each_is():
    assert registry.names() == BUILT_IN and list(registry.NAMES) == BUILT_IN
    assert [registry.cell(n) for n in BUILT_IN] == [rc.ElmanCell, rc.LSTMCell, rc.GRUCell, rc.LayerNormLSTMCell,
                                                    rc.LayerNormGRUCell, rc.MinGRUCell, rc.MinLSTMCell,
                                                    rc.DeepTransitionCell, rc.DeepOutputCell]
    for name, kind in [("rnn", rc.RNN), ("lstm", rc.LSTM), ("gru", rc.GRU)]:
        layer = registry.layer(name, 3, 4)
        assert type(layer) is kind and layer.backend == "fused"  # the built-in layer: torch's fused kernel
    layer = registry.layer("lnlstm", 3, 4)
    assert type(layer) is rc.Recurrent and type(layer.cells[0][0]) is rc.LayerNormLSTMCell
    assert layer.backend == "bptt"


@pytest.mark.parametrize("name", [n for n in BUILT_IN if n not in ("mingru", "minlstm")])  # no W_hh to drop
def test_layer_passes_every_option_on(name):
    layer = registry.layer(name, 3, 4, num_layers=2, bidirectional=True, dropout=0.25, backend="autograd",
                           weight_drop=0.5)
    assert (layer.num_layers, layer.bidirectional, layer.dropout) == (2, True, 0.25)
    assert layer.backend == "autograd" and all(c.weight_drop == 0.5 for cells in layer.cells for c in cells)
    out, _ = layer(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 8)


def test_layer_passes_cell_options_to_the_built_in_layer():
    assert registry.layer("rnn", 3, 4, nonlinearity="relu").cells[0][0].nonlinearity == "relu"
    assert registry.layer("gru", 3, 4, bias=False).cells[0][0].bias_ih is None


def models(name: str) -> dict:
    """One tiny instance of every sequence model that builds its layers from the registry."""
    return {
        "classifier": SequenceClassifier(ClassifierConfig(vocab_size=8, num_classes=3, cell=name, embedding_size=4,
                                                          hidden_size=5, dropout=0.0)),
        "tagger": SequenceTagger(TaggerConfig(vocab_size=8, num_tags=3, cell=name, embedding_size=4, hidden_size=5,
                                              dropout=0.0)),
        "seq2seq": Seq2Seq(Seq2SeqConfig(src_vocab_size=8, tgt_vocab_size=9, cell=name, embedding_size=4,
                                         hidden_size=6, dropout=0.0)),
        "memory": MemoryModel(name, input_size=2, hidden_size=5, output_size=1),
    }


def losses(built: dict) -> dict:
    """Each model's loss on a tiny batch."""
    pairs = collate([([4, 5, 6], [4, 5]), ([7, 4], [6, 7, 8])], [0, 1])
    tags = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 0]])
    return {
        "classifier": built["classifier"](WORDS, LENGTHS, torch.tensor([0, 2])).loss,
        "tagger": built["tagger"](WORDS, LENGTHS, tags=tags).loss,
        "seq2seq": built["seq2seq"](pairs.src, pairs.src_lengths, pairs.tgt_in, pairs.tgt_out).loss,
        "memory": built["memory"](torch.randn(2, 6, 2)).pow(2).mean(),
    }


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_model_builds_and_runs_with_each_built_in_cell(name):
    built = models(name)
    assert type(built["classifier"].rnn.cells[0][0]) is registry.cell(name)
    assert type(built["seq2seq"].decoder_cells[0]) is registry.cell(name)  # stepped by the decoder itself
    for model, loss in losses(built).items():
        assert loss.isfinite(), model


def test_a_registered_cell_is_usable_by_name_and_trains(indrnn):
    assert registry.names() == [*BUILT_IN, "indrnn"] and "indrnn" in registry.NAMES
    layer = registry.layer("indrnn", 3, 4, num_layers=2, bidirectional=True)
    assert type(layer) is rc.Recurrent and type(layer.cells[1][1]) is indrnn and layer.backend == "bptt"
    built = models("indrnn")
    params = [p for model in built.values() for p in model.parameters()]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.1)
    sum(losses(built).values()).backward()
    optimizer.step()  # one training step of every model
    assert all(p.grad is not None and p.grad.isfinite().all() for p in params)
    changed = [not torch.equal(old, p) for old, p in zip(before, params) if p.grad.abs().sum() > 0]
    assert len(changed) > len(params) // 2 and all(changed)


@pytest.mark.parametrize("task", ["classify", "tag", "translate"])
def test_a_registered_cell_is_a_cell_flag_choice(indrnn, task):
    args = build_parser().parse_args(["train", task, "--cell", "indrnn"])
    assert args.cell == "indrnn"


def test_an_unregistered_cell_flag_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "tag", "--cell", "indrnn"])
    assert "invalid choice: 'indrnn'" in capsys.readouterr().err


def test_tree_cells_by_name_and_the_old_elman():
    assert registry.tree_names() == ["elman", "lstm", "rnn"]
    assert registry.tree_cell("lstm") is BinaryTreeLSTMCell
    assert registry.tree_cell("rnn") is registry.tree_cell("elman") is TreeRNNCell
    for name in ("lstm", "rnn", "elman"):  # 'elman': run folders and commands from before the registry
        model = TreeClassifier(ClassifierConfig(vocab_size=8, num_classes=5, structure="tree", cell=name))
        assert type(model.cell) is registry.tree_cell(name)
    assert {"elman", "lnlstm"} <= set(registry.ANY_NAMES)  # the classifier's --cell: sequences and trees


def test_errors_name_the_bad_value_and_the_known_names(indrnn):
    with pytest.raises(ValueError, match=r"cell must be one of \['rnn', 'lstm', 'gru', 'lnlstm', 'lngru', 'mingru', 'minlstm', 'dtrnn', "
                       r"'dotrnn', 'indrnn'\], "
                                         r"got 'transformer'"):
        registry.layer("transformer", 3, 4)
    with pytest.raises(ValueError, match=r"cell must be one of .*got 'elman'"):  # 'elman' is for trees only
        registry.cell("elman")
    with pytest.raises(ValueError, match=r"a tree cell must be one of \['elman', 'lstm', 'rnn'\], got 'gru'"):
        registry.tree_cell("gru")
    with pytest.raises(ValueError, match=r"a tree cell must be one of .*got 'indrnn'"):  # registered without one
        registry.tree_cell("indrnn")
    with pytest.raises(ValueError, match="cell 'indrnn' is already registered .*replace=True"):
        rc.register_cell("indrnn", rc.GRUCell)
    rc.register_cell("indrnn", rc.GRUCell, replace=True)
    assert registry.cell("indrnn") is rc.GRUCell
    with pytest.raises(ValueError, match="'elman' is kept as an alias of 'rnn' for trees"):
        rc.register_cell("elman", rc.ElmanCell)
    with pytest.raises(ValueError, match="a cell name must be a lowercase identifier .*got 'My Cell'"):
        rc.register_cell("My Cell", rc.GRUCell)
    with pytest.raises(ValueError, match="cell must be a Cell class or factory, got 3"):
        rc.register_cell("three", 3)


def test_weight_drop_needs_a_cell_that_takes_it(indrnn):
    with pytest.raises(ValueError, match=r"weight_drop=0.5 needs a cell that takes weight_drop; cell 'indrnn' "
                                         r"\(IndRNNCell\) does not"):
        registry.layer("indrnn", 3, 4, weight_drop=0.5)
    assert registry.layer("indrnn", 3, 4, weight_drop=0.0).cells[0][0].hidden_size == 4


@pytest.mark.parametrize("name", registry.names())
@pytest.mark.parametrize("backend", ["auto", "autograd", "bptt"])
def test_every_cell_trains_under_cpu_bf16_autocast_on_every_backend(name, backend):
    """`--precision bf16` on the CPU: the products in bfloat16, the states float32, close to the float32 run. The
    stepped GRU and minGRU/minLSTM used to fail here (lerp of a float32 state with bfloat16 gates)."""
    torch.manual_seed(0)
    try:
        layer = registry.layer(name, 8, 16, 2, backend=backend)
    except ValueError as e:  # a backend the cell has no way to run (bptt without step_backward)
        pytest.skip(str(e))
    x = torch.randn(3, 5, 8)
    ref, _ = layer(x)
    with torch.autocast("cpu", torch.bfloat16):
        out, state = layer(x)
    assert out.dtype == torch.float32 and all(f.dtype == torch.float32 for f in state)
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters() if p.requires_grad)
