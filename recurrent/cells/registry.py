"""The registry of cells: every `--cell NAME` and `config.cell` is looked up here, and nowhere else.

    layer = registry.layer("lstm", input_size=32, hidden_size=64, num_layers=2, bidirectional=True)
    cell = registry.cell("gru")(32, 64)                  # one step, for a decoder that steps cells itself
    tree = registry.tree_cell("lstm")(32, 64)            # the Tree-LSTM, for recursive networks over parse trees
    rc.register_cell("indrnn", IndRNNCell)               # now `--cell indrnn` works in train lm/classify/tag/translate

A layer of a built-in cell is its torch-compatible layer (rc.RNN, rc.LSTM, rc.GRU: torch.nn's parameters, and
torch's fused kernel); a layer of any other cell is rc.Recurrent(cell), which runs on the bptt or autograd
backend (see recurrent/backends.py). A name may also have a tree cell: the composition step of a recursive
network (recurrent/cells/tree.py). 'elman', the trees' old name for 'rnn', stays accepted for trees, so run
folders and commands from before the registry still work.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from recurrent.cells.base import Cell
from recurrent.cells.deep_transition import DeepOutputCell, DeepTransitionCell
from recurrent.cells.elman import ElmanCell
from recurrent.cells.gru import GRUCell
from recurrent.cells.layernorm_gru import LayerNormGRUCell
from recurrent.cells.layernorm_lstm import LayerNormLSTMCell
from recurrent.cells.lstm import LSTMCell
from recurrent.cells.mingru import MinGRUCell, MinLSTMCell
from recurrent.cells.tree import BinaryTreeLSTMCell, TreeRNNCell
from recurrent.cells.zoneout import ZoneoutCell
from recurrent.layers import GRU, LSTM, RNN, Recurrent


@dataclass(frozen=True)
class CellSpec:
    """One registered name."""

    name: str
    cell: Callable[..., Cell]  # the sequence cell: cell(input_size, hidden_size, **kwargs), one time step
    layer: type[Recurrent] | None = None  # a built-in layer with a fused kernel; None: rc.Recurrent(cell)
    tree: Callable[..., nn.Module] | None = None  # the tree cell of this name: leaf(x) and compose(left, right)
    help: str = ""


CELLS: dict[str, CellSpec] = {spec.name: spec for spec in [
    CellSpec("rnn", ElmanCell, RNN, TreeRNNCell, "the Elman network; trees: the recursive NN (Socher et al. 2011)"),
    CellSpec("lstm", LSTMCell, LSTM, BinaryTreeLSTMCell, "LSTM; trees: the binary Tree-LSTM (Tai et al. 2015)"),
    CellSpec("gru", GRUCell, GRU, None, "GRU (Cho et al. 2014)"),
    CellSpec("lnlstm", LayerNormLSTMCell, None, None, "LayerNorm LSTM (Ba et al. 2016): no fused kernel, runs on bptt"),
    CellSpec("lngru", LayerNormGRUCell, None, None, "LayerNorm GRU: LN on the gate pre-activations, runs on bptt"),
    CellSpec("mingru", MinGRUCell, None, None, "minGRU (Feng et al. 2024): trains as a parallel scan over time"),
    CellSpec("minlstm", MinLSTMCell, None, None, "minLSTM (Feng et al. 2024): trains as a parallel scan over time"),
    CellSpec("dtrnn", DeepTransitionCell, None, None, "deep transition RNN (Pascanu et al. 2014), 2 layers per step"),
    CellSpec("dotrnn", DeepOutputCell, None, None, "deep transition and deep output RNN (Pascanu et al. 2014)"),
]}
TREE_ALIASES = {"elman": "rnn"}  # old tree names -> registered names


class Names:
    """The registered names, read when asked: a config field's `choices` sees cells registered after import."""

    def __init__(self, names: Callable[[], list[str]]):
        self._names = names

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


def names() -> list[str]:
    """Every sequence cell's name, in registration order."""
    return list(CELLS)


def tree_names() -> list[str]:
    """Every name with a tree cell, and the aliases, sorted."""
    return sorted([n for n, spec in CELLS.items() if spec.tree is not None] + list(TREE_ALIASES))


NAMES = Names(names)  # for `field(metadata={"choices": NAMES})`
TREE_NAMES = Names(tree_names)
ANY_NAMES = Names(lambda: sorted(set(names()) | set(tree_names())))  # a config for sequences and trees alike


def register_cell(name: str, cell: Callable[..., Cell], *, layer: type[Recurrent] | None = None,
                  tree: Callable[..., nn.Module] | None = None, help: str = "", replace: bool = False) -> CellSpec:
    """Make `name` usable wherever a cell is chosen by name (`--cell name`, `LMConfig(cell=name)`).

    cell: called as cell(input_size, hidden_size) for each layer and direction (a Cell class, or a factory);
    layer: a built-in layer class taking (input_size, hidden_size, num_layers=, bidirectional=, dropout=,
    weight_drop=, backend=), if the cell has one; tree: its tree cell, if any. A name taken raises, unless
    replace=True (re-running a notebook cell)."""
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"a cell name must be a lowercase identifier (it becomes --cell NAME), got {name!r}")
    if name in TREE_ALIASES:
        raise ValueError(f"{name!r} is kept as an alias of {TREE_ALIASES[name]!r} for trees; choose another name")
    if name in CELLS and not replace:
        raise ValueError(f"cell {name!r} is already registered ({CELLS[name].cell.__name__}); pass replace=True "
                         f"to replace it")
    if not callable(cell):
        raise ValueError(f"cell must be a Cell class or factory, got {cell!r}")
    CELLS[name] = CellSpec(name, cell, layer, tree, help)
    return CELLS[name]


def spec(name: str) -> CellSpec:
    """The registered entry for `name`; a ValueError naming the known names."""
    if name not in CELLS:
        raise ValueError(f"cell must be one of {names()}, got {name!r} (rc.register_cell adds one)")
    return CELLS[name]


def cell(name: str) -> Callable[..., Cell]:
    """The sequence cell class (or factory) registered as `name`."""
    return spec(name).cell


def tree_cell(name: str) -> Callable[..., nn.Module]:
    """The tree cell registered as `name` ('elman' is 'rnn'); a ValueError naming the names that have one."""
    found = CELLS.get(TREE_ALIASES.get(name, name))
    if found is None or found.tree is None:
        raise ValueError(f"a tree cell must be one of {tree_names()}, got {name!r}")
    return found.tree


def layer(name: str, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
          dropout: float = 0.0, backend: str = "auto", weight_drop: float = 0.0, zoneout: float = 0.0,
          **kwargs) -> Recurrent:
    """A layer of the cell registered as `name`: its built-in layer (rc.RNN/LSTM/GRU) where it has one, else
    rc.Recurrent(cell). kwargs go to the built-in layer or to the cell (e.g. nonlinearity="relu" for rnn).
    weight_drop: DropConnect on W_hh, for cells that take it (every ProjectedCell). zoneout: each state unit keeps
    its previous value with this probability in training (Krueger et al. 2017); the layer is then rc.Recurrent of
    a ZoneoutCell around the cell, on the autograd backend."""
    entry = spec(name)
    if zoneout:
        if weight_drop:
            kwargs["weight_drop"] = weight_drop
        make = partial(ZoneoutCell, cell=entry.cell, p=zoneout, **kwargs)
        return Recurrent(make, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                         dropout=dropout, backend=backend)
    if entry.layer is not None:
        return entry.layer(input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                           dropout=dropout, weight_drop=weight_drop, backend=backend, **kwargs)
    if weight_drop:
        if "weight_drop" not in inspect.signature(entry.cell).parameters:
            raise ValueError(f"weight_drop={weight_drop} needs a cell that takes weight_drop; cell {name!r} "
                             f"({getattr(entry.cell, '__name__', entry.cell)}) does not")
        kwargs["weight_drop"] = weight_drop
    make = partial(entry.cell, **kwargs) if kwargs else entry.cell
    return Recurrent(make, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                     dropout=dropout, backend=backend)
